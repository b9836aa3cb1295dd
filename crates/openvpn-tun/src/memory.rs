//! An in-memory packet device for tests: two tokio channels instead of a kernel interface.

use std::io;

use tokio::sync::{Mutex, mpsc};

use crate::PacketDevice;

/// The VPN's side of an in-memory tun: implements [`PacketDevice`].
///
/// `recv` returns packets the test injected through [`MemoryTunHandle::inject`]; `send` queues
/// packets the test reads with [`MemoryTunHandle::written`].
#[derive(Debug)]
pub struct MemoryTun {
    from_os: Mutex<mpsc::Receiver<Vec<u8>>>,
    to_os: mpsc::Sender<Vec<u8>>,
}

/// The test's side of an in-memory tun, playing the operating system.
#[derive(Debug)]
pub struct MemoryTunHandle {
    to_vpn: mpsc::Sender<Vec<u8>>,
    from_vpn: mpsc::Receiver<Vec<u8>>,
}

impl MemoryTun {
    /// Creates a connected device and test handle; each direction queues up to `capacity`
    /// packets (at least one) before the writer waits.
    pub fn pair(capacity: usize) -> (MemoryTun, MemoryTunHandle) {
        let capacity = capacity.max(1);
        let (to_vpn, from_os) = mpsc::channel(capacity);
        let (to_os, from_vpn) = mpsc::channel(capacity);
        (
            MemoryTun {
                from_os: Mutex::new(from_os),
                to_os,
            },
            MemoryTunHandle { to_vpn, from_vpn },
        )
    }
}

impl PacketDevice for MemoryTun {
    /// Waits for an injected packet. Fails with `BrokenPipe` once the handle is dropped and the
    /// queue is empty, and with `InvalidInput` (dropping the packet) if `buf` is too small.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let pkt = self.from_os.lock().await.recv().await.ok_or_else(|| {
            io::Error::new(io::ErrorKind::BrokenPipe, "memory tun: test handle dropped")
        })?;
        let Some(dst) = buf.get_mut(..pkt.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "memory tun: buffer of {} bytes is too small for a {}-byte packet",
                    buf.len(),
                    pkt.len()
                ),
            ));
        };
        dst.copy_from_slice(&pkt);
        Ok(pkt.len())
    }

    /// Queues the packet for the test, waiting while the queue is full. Fails with
    /// `BrokenPipe` once the handle is dropped.
    async fn send(&self, pkt: &[u8]) -> io::Result<usize> {
        self.to_os.send(pkt.to_vec()).await.map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "memory tun: test handle dropped")
        })?;
        Ok(pkt.len())
    }
}

impl MemoryTunHandle {
    /// Hands a packet to the VPN as if the OS had routed it into the tunnel. Waits while the
    /// queue is full; fails with `BrokenPipe` once the [`MemoryTun`] is dropped.
    pub async fn inject(&self, pkt: impl Into<Vec<u8>>) -> io::Result<()> {
        self.to_vpn
            .send(pkt.into())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "memory tun: device dropped"))
    }

    /// Waits for the next packet the VPN wrote; `None` once the [`MemoryTun`] is dropped and
    /// everything was read.
    pub async fn written(&mut self) -> Option<Vec<u8>> {
        self.from_vpn.recv().await
    }

    /// The next packet the VPN wrote, if one is queued right now.
    pub fn try_written(&mut self) -> Option<Vec<u8>> {
        self.from_vpn.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn injected_packets_come_out_of_recv_in_order() {
        let (tun, handle) = MemoryTun::pair(8);
        handle.inject(vec![0x45, 1, 2]).await.expect("inject");
        handle.inject(&[0x60, 9][..]).await.expect("inject");
        let mut buf = [0u8; 1500];
        let n = tun.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], &[0x45, 1, 2]);
        let n = tun.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], &[0x60, 9]);
    }

    #[tokio::test]
    async fn sent_packets_reach_the_handle() {
        let (tun, mut handle) = MemoryTun::pair(8);
        assert_eq!(handle.try_written(), None);
        assert_eq!(tun.send(&[0x45, 0, 0, 20]).await.expect("send"), 4);
        assert_eq!(handle.try_written(), Some(vec![0x45, 0, 0, 20]));
        tun.send(&[0x60]).await.expect("send");
        assert_eq!(handle.written().await, Some(vec![0x60]));
    }

    #[tokio::test]
    async fn small_buffer_is_an_error_not_a_truncation() {
        let (tun, handle) = MemoryTun::pair(1);
        handle.inject(vec![0u8; 100]).await.expect("inject");
        let mut buf = [0u8; 10];
        let err = tun.recv(&mut buf).await.expect_err("too small");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn dropped_sides_give_broken_pipe_and_none() {
        let (tun, handle) = MemoryTun::pair(1);
        drop(handle);
        let mut buf = [0u8; 10];
        let err = tun.recv(&mut buf).await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        let err = tun.send(&[1]).await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

        let (tun, mut handle) = MemoryTun::pair(1);
        tun.send(&[7]).await.expect("send");
        drop(tun);
        assert_eq!(handle.written().await, Some(vec![7]));
        assert_eq!(handle.written().await, None);
        let err = handle.inject(vec![1]).await.expect_err("closed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn shared_device_serves_reader_and_writer_tasks() {
        let (tun, mut handle) = MemoryTun::pair(4);
        let tun = Arc::new(tun);
        // An echo loop like a driver's: read from the OS side, write back.
        let echo = {
            let tun = Arc::clone(&tun);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                for _ in 0..3 {
                    let n = tun.recv(&mut buf).await?;
                    tun.send(&buf[..n]).await?;
                }
                io::Result::Ok(())
            })
        };
        for i in 0..3u8 {
            handle.inject(vec![i; 3]).await.expect("inject");
            let got = tokio::time::timeout(Duration::from_secs(5), handle.written())
                .await
                .expect("echo in time");
            assert_eq!(got, Some(vec![i; 3]));
        }
        echo.await.expect("join").expect("echo loop");
    }

    #[tokio::test]
    async fn full_queue_makes_the_writer_wait() {
        let (tun, mut handle) = MemoryTun::pair(1);
        tun.send(&[1]).await.expect("first fits");
        let second = tokio::time::timeout(Duration::from_millis(50), tun.send(&[2])).await;
        assert!(second.is_err(), "second send should wait for the reader");
        assert_eq!(handle.written().await, Some(vec![1]));
        tun.send(&[3]).await.expect("room again");
        assert_eq!(handle.written().await, Some(vec![3]));
    }
}
