/*
 * openvpn-rs: the two logging callbacks handed to OpenVPN plug-ins.
 * SPDX-License-Identifier: MIT OR Apache-2.0
 *
 * A plug-in logs with a printf-style format, either through a variadic function or through
 * one that takes a va_list. Stable Rust can declare neither kind of function nor format a
 * va_list, so this file formats the message with vsnprintf and passes the finished text
 * (plus the errno value seen on entry) to ovrs_plugin_log_sink, written in Rust.
 *
 * A plug-in may fork a helper process that keeps logging (auth-pam does). Such a child is a
 * copy of one thread of a multi-threaded process, where taking a lock held by another thread
 * at the time of the fork would hang forever, so in any process other than the one that
 * loaded the plug-in the text goes straight to stderr instead of into Rust.
 */
#include <stdarg.h>
#include <stdio.h>
#include <errno.h>
#include <sys/types.h>
#include <unistd.h>

/* Implemented in src/callbacks.rs. */
void ovrs_plugin_log_sink(int flags, const char *plugin, const char *text, int errnum);

/* Longest message kept; longer ones are cut. */
#define OVRS_LOG_MAX 2048

static pid_t ovrs_loader_pid;

void ovrs_plugin_log_init(void)
{
    ovrs_loader_pid = getpid();
}

void ovrs_plugin_vlog(int flags, const char *plugin, const char *format, va_list args)
{
    int errnum = errno;
    char text[OVRS_LOG_MAX];

    if (plugin == NULL || format == NULL) {
        return;
    }
    if (vsnprintf(text, sizeof(text), format, args) < 0) {
        return;
    }
    if (getpid() != ovrs_loader_pid) {
        fprintf(stderr, "%s: %s\n", plugin, text);
        return;
    }
    ovrs_plugin_log_sink(flags, plugin, text, errnum);
}

void ovrs_plugin_log(int flags, const char *plugin, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    ovrs_plugin_vlog(flags, plugin, format, args);
    va_end(args);
}
