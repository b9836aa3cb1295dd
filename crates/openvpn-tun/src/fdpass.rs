//! Unix-socket plumbing for the privilege-separated helper: passing a file descriptor with
//! `SCM_RIGHTS`, the peer's credentials (`SO_PEERCRED`), the effective uid, and the listening
//! socket systemd hands over with socket activation (`LISTEN_FDS`, fd 3).
//!
//! Every function works on a borrowed descriptor of a connected `AF_UNIX` stream socket and is
//! a thin, checked wrapper around one system call.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// At most this many descriptors are accepted in one message (more are closed).
pub const MAX_FDS: usize = 4;

/// The credentials of the process at the other end of a Unix socket, as the kernel recorded
/// them when it connected (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// Sends `data` on the stream socket `sock` with one descriptor `fd` attached (`SCM_RIGHTS`).
///
/// Returns the number of bytes of `data` sent; the descriptor travels with the first byte.
/// `MSG_NOSIGNAL`: a closed peer gives `EPIPE`, never `SIGPIPE`. A non-blocking socket may
/// answer `WouldBlock`.
pub fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor needs at least one byte of data to travel with",
        ));
    }
    let fd_len = size_of::<RawFd>() as libc::c_uint;
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic on their argument.
    let (space, len) = unsafe { (libc::CMSG_SPACE(fd_len), libc::CMSG_LEN(fd_len)) };
    // u64 elements: the control buffer must be aligned for `cmsghdr`.
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: `msghdr` is a plain C struct for which all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg.msg_control` points to `space` zeroed, aligned bytes, enough for one
    // header plus one descriptor (CMSG_SPACE), so CMSG_FIRSTHDR returns a non-null pointer
    // into `control`, and CMSG_DATA points to `fd_len` writable bytes inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(io::Error::other("no room for the control message"));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd.as_raw_fd());
    }
    // SAFETY: `msg` and everything it points to (`iov` → `data`, `control`) live until the
    // call returns; the kernel only reads them. The result is checked.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Receives bytes from the stream socket `sock` into `buf`, together with any descriptors that
/// arrived with them (`SCM_RIGHTS`, close-on-exec).
///
/// Returns the number of bytes (0 = the peer closed) and the descriptors. If the sender
/// attached more than [`MAX_FDS`] descriptors, the ones that fit are closed and an error is
/// returned.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let fd_len = (MAX_FDS * size_of::<RawFd>()) as libc::c_uint;
    // SAFETY: pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fd_len) };
    let mut control = vec![0u64; (space as usize).div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points to `buf` (writable, `buf.len()` bytes) and `control` (writable,
    // `space` bytes), both alive for the whole call. The result is checked.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` and set `msg_controllen`; CMSG_FIRSTHDR/NXTHDR only
    // return headers that lie entirely inside it (or null). For SCM_RIGHTS the payload is an
    // array of descriptors that the kernel installed in this process for us: each is owned by
    // nobody else, so wrapping it in `OwnedFd` (which closes it) is sound.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header) / size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {MAX_FDS} descriptors were sent; they were closed"),
        ));
    }
    Ok((n, fds))
}

/// The credentials of the peer of the connected Unix socket `sock` (`SO_PEERCRED`).
pub fn peer_cred(sock: BorrowedFd<'_>) -> io::Result<PeerCred> {
    // SAFETY: all-zero is a valid `ucred`.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes and `len` is a valid in/out length; the
    // result is checked.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

static LISTEN_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// The first socket systemd passed with socket activation (`LISTEN_PID` = our pid,
/// `LISTEN_FDS` ≥ 1 → fd 3), marked close-on-exec. `None` without activation, and on every
/// call after the first (the descriptor has one owner).
pub fn systemd_listen_fd() -> io::Result<Option<OwnedFd>> {
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if !pid_ok || count == 0 {
        return Ok(None);
    }
    if LISTEN_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    const SD_LISTEN_FDS_START: RawFd = 3;
    // SAFETY: all-zero is a valid `stat`.
    let mut st: libc::stat = unsafe { zeroed() };
    // SAFETY: `st` is writable; fstat on any descriptor number is harmless and checked.
    if unsafe { libc::fstat(SD_LISTEN_FDS_START, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "LISTEN_FDS is set but fd 3 is not a socket",
        ));
    }
    // SAFETY: fcntl on an open descriptor (fstat just succeeded); checked.
    if unsafe { libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID is our pid) and it is open;
    // LISTEN_FD_TAKEN makes sure only one `OwnedFd` is ever created for it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_descriptor_crosses_a_socketpair() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut pr, mut pw) = UnixStream::pair().expect("payload pair");
        let n = send_with_fd(a.as_fd(), b"OK tun9\n", pw.as_fd()).expect("send");
        assert_eq!(n, 8);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).expect("recv");
        assert_eq!(&buf[..n], b"OK tun9\n");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the same socket: bytes written to it arrive at `pr`.
        let mut passed = UnixStream::from(fds.into_iter().next().expect("fd"));
        passed.write_all(b"hi").expect("write");
        let mut got = [0u8; 2];
        pr.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"hi");
        pw.write_all(b"!").expect("write");
        // Plain data carries no descriptors; empty data is refused.
        (&a).write_all(b"x").expect("write");
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).expect("recv");
        assert_eq!((n, fds.len()), (1, 0));
        assert!(send_with_fd(a.as_fd(), b"", pw.as_fd()).is_err());
    }

    #[test]
    fn peer_credentials_are_our_own_on_a_socketpair() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let c = peer_cred(a.as_fd()).expect("cred");
        assert_eq!(c.pid as u32, std::process::id());
        assert_eq!(c.uid, euid());
    }

    #[test]
    fn no_activation_without_listen_pid() {
        // The test runner is not socket-activated (LISTEN_PID, if any, is not our pid).
        assert!(systemd_listen_fd().expect("no error").is_none());
    }
}
