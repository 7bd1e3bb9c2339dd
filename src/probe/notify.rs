//! Our `NOTIFY_SOCKET`: one datagram socket per service. Each datagram comes with the
//! sender's credentials (SO_PASSCRED), so the actor can check it came from that service.

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// A datagram as received: sender pid (when the kernel told us) and its `KEY=VALUE` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    pub pid: Option<i32>,
    pub fields: Vec<(String, String)>,
}

pub fn bind(path: &Path) -> std::io::Result<UnixDatagram> {
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path)?;
    setsockopt(&sock, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
    Ok(sock)
}

pub async fn recv(sock: &UnixDatagram) -> std::io::Result<NotifyMessage> {
    loop {
        sock.readable().await?;
        let res = sock.try_io(Interest::READABLE, || {
            let mut buf = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            )
            .map_err(std::io::Error::from)?;
            let mut pid = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmCredentials(cred) = c {
                        pid = Some(cred.pid());
                    }
                }
            }
            let len = msg.bytes;
            Ok((pid, buf[..len].to_vec()))
        });
        match res {
            Ok((pid, data)) => {
                return Ok(NotifyMessage {
                    pid,
                    fields: parse(&data),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

pub fn parse(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receives_with_sender_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let sock = bind(&path).unwrap();
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        client
            .send_to(b"READY=1\nSTATUS=listening on 3001\n", &path)
            .unwrap();
        let msg = recv(&sock).await.unwrap();
        assert_eq!(msg.pid, Some(std::process::id() as i32));
        assert_eq!(
            msg.fields,
            vec![
                ("READY".into(), "1".into()),
                ("STATUS".into(), "listening on 3001".into())
            ]
        );
    }
}
