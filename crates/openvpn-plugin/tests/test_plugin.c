/*
 * openvpn-rs test module for the plug-in interface (v3 entry points, per-client state).
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * Our own declarations of the ABI (from its published description), no OpenVPN header.
 *
 * Opened with:   argv[1] = a file where every call is appended as one line ("journal")
 *                argv[2] = "fail" makes the open fail
 * Asks for:      UP, DOWN, AUTH_USER_PASS_VERIFY, CLIENT_CONNECT, CLIENT_DISCONNECT,
 *                LEARN_ADDRESS, CLIENT_CONNECT_V2
 * Answers:
 *   UP                    list: argv1 = its argv[1], env_foo = $foo, version = host version,
 *                         b64 = base64("hi") via the host's callback; success
 *   AUTH_USER_PASS_VERIFY username alice + password right: success; username "later-yes"
 *                         / "later-no": a child process writes 1 / 0 to $auth_control_file
 *                         after 300 ms, deferred; anything else: failure
 *   CLIENT_CONNECT        writes a push line to the file in argv[1]; success
 *   CLIENT_CONNECT_V2     list: config = a push line naming the client's call count
 *   others                success
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

struct ovrs_list {
    struct ovrs_list *next;
    char *name;
    char *value;
};

struct ovrs_callbacks {
    void (*log)(int flags, const char *name, const char *fmt, ...);
    void (*vlog)(int flags, const char *name, const char *fmt, va_list ap);
    void (*memzero)(void *p, size_t n);
    int (*b64_encode)(const void *data, int size, char **out);
    int (*b64_decode)(const char *text, void *data, int size);
};

struct ovrs_open_in {
    int type_mask;
    const char **argv;
    const char **envp;
    struct ovrs_callbacks *callbacks;
    int ssl_api;
    const char *version;
    unsigned int major;
    unsigned int minor;
    const char *patch;
};

struct ovrs_open_ret {
    int type_mask;
    void *handle;
    struct ovrs_list **list;
};

struct ovrs_func_in {
    int type;
    const char **argv;
    const char **envp;
    void *handle;
    void *client;
    int depth;
    void *cert;
};

struct ovrs_func_ret {
    struct ovrs_list **list;
};

enum { T_UP = 0, T_DOWN = 1, T_AUTH = 5, T_CONNECT = 6, T_DISCONNECT = 7, T_LEARN = 8,
       T_CONNECT_V2 = 9 };

struct state {
    char journal[512];
    struct ovrs_callbacks *cb;
    char version[64];
};

struct client {
    int calls;
};

static const char *env_get(const char **envp, const char *name)
{
    size_t n = strlen(name);
    for (; envp && *envp; envp++) {
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=') {
            return *envp + n + 1;
        }
    }
    return NULL;
}

static void note(struct state *s, const char *fmt, ...)
{
    FILE *f = fopen(s->journal, "a");
    va_list ap;
    if (!f) {
        return;
    }
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static void vlog_through(struct state *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    s->cb->vlog(4, "test-plugin", fmt, ap);
    va_end(ap);
}

static void push(struct ovrs_list **list, const char *name, const char *value)
{
    struct ovrs_list *e = calloc(1, sizeof(*e));
    e->name = strdup(name);
    e->value = strdup(value);
    e->next = *list;
    *list = e;
}

int openvpn_plugin_open_v3(int version, const struct ovrs_open_in *in, struct ovrs_open_ret *out)
{
    struct state *s;
    if (version < 5 || !in->argv[1]) {
        return 1;
    }
    if (in->argv[2] && strcmp(in->argv[2], "fail") == 0) {
        in->callbacks->log(1, "test-plugin", "asked to fail (%s)", in->argv[2]);
        return 1;
    }
    s = calloc(1, sizeof(*s));
    snprintf(s->journal, sizeof(s->journal), "%s", in->argv[1]);
    snprintf(s->version, sizeof(s->version), "%s %u.%u.%s", in->version, in->major, in->minor,
             in->patch);
    s->cb = in->callbacks;
    s->cb->log(4, "test-plugin", "opened, %d offered, open_env=%s", in->type_mask,
               env_get(in->envp, "open_env") ? env_get(in->envp, "open_env") : "-");
    vlog_through(s, "vlog works: %d", 42);
    note(s, "open %s", env_get(in->envp, "open_env") ? env_get(in->envp, "open_env") : "-");
    out->type_mask = (1 << T_UP) | (1 << T_DOWN) | (1 << T_AUTH) | (1 << T_CONNECT)
                     | (1 << T_DISCONNECT) | (1 << T_LEARN) | (1 << T_CONNECT_V2);
    out->handle = s;
    return 0;
}

static void write_later(const char *path, const char *text)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec t = { 0, 300 * 1000 * 1000 };
        int fd;
        nanosleep(&t, NULL);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, text, strlen(text));
            (void)w;
            close(fd);
        }
        _exit(0);
    }
}

int openvpn_plugin_func_v3(int version, const struct ovrs_func_in *in, struct ovrs_func_ret *out)
{
    struct state *s = in->handle;
    struct client *c = in->client;
    const char *user = env_get(in->envp, "username");
    const char *pass = env_get(in->envp, "password");
    char text[256];
    int calls = 0;
    (void)version;
    if (c) {
        calls = ++c->calls;
    }
    switch (in->type) {
    case T_UP: {
        char *b64 = NULL;
        note(s, "up %s", in->argv[1] ? in->argv[1] : "-");
        push(out->list, "argv1", in->argv[1] ? in->argv[1] : "");
        push(out->list, "env_foo", env_get(in->envp, "foo") ? env_get(in->envp, "foo") : "");
        push(out->list, "version", s->version);
        if (s->cb->b64_encode("hi", 2, &b64) > 0) {
            push(out->list, "b64", b64);
            free(b64);
        }
        return 0;
    }
    case T_AUTH: {
        const char *acf = env_get(in->envp, "auth_control_file");
        note(s, "auth %s %s calls=%d", user ? user : "-",
             env_get(in->envp, "common_name") ? env_get(in->envp, "common_name") : "-", calls);
        if (user && pass && strcmp(user, "alice") == 0 && strcmp(pass, "right") == 0) {
            return 0;
        }
        if (user && acf && strcmp(user, "later-yes") == 0) {
            write_later(acf, "1");
            return 2;
        }
        if (user && acf && strcmp(user, "later-no") == 0) {
            write_later(acf, "0");
            return 2;
        }
        return 1;
    }
    case T_CONNECT: {
        FILE *f = in->argv[1] ? fopen(in->argv[1], "w") : NULL;
        note(s, "connect %s", env_get(in->envp, "common_name") ? env_get(in->envp, "common_name") : "-");
        if (!f) {
            return 1;
        }
        fprintf(f, "push \"route 10.98.0.0 255.255.0.0\"\n");
        fclose(f);
        return 0;
    }
    case T_CONNECT_V2:
        note(s, "connect-v2 %s calls=%d",
             env_get(in->envp, "common_name") ? env_get(in->envp, "common_name") : "-", calls);
        snprintf(text, sizeof(text), "push \"route 10.99.%d.0 255.255.255.0\"", calls);
        push(out->list, "config", text);
        return 0;
    case T_LEARN:
        note(s, "learn %s %s %s", in->argv[1] ? in->argv[1] : "-", in->argv[2] ? in->argv[2] : "-",
             in->argv[3] ? in->argv[3] : "-");
        return 0;
    case T_DISCONNECT:
        note(s, "disconnect %s", env_get(in->envp, "common_name") ? env_get(in->envp, "common_name") : "-");
        return 0;
    default:
        note(s, "type %d", in->type);
        return 0;
    }
}

void *openvpn_plugin_client_constructor_v1(void *handle)
{
    struct state *s = handle;
    note(s, "constructor");
    return calloc(1, sizeof(struct client));
}

void openvpn_plugin_client_destructor_v1(void *handle, void *client)
{
    struct state *s = handle;
    note(s, "destructor %d", ((struct client *)client)->calls);
    free(client);
}

void openvpn_plugin_close_v1(void *handle)
{
    struct state *s = handle;
    note(s, "close");
    free(s);
}
