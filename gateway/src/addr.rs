//! Peer addresses: the IP of a Pingora socket address, and an IP's text form written without
//! the formatting machinery.

use std::io::Write as _;
use std::net::IpAddr;

use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;

/// The IP of a TCP peer (`None` for Unix sockets and unknown peers).
pub fn inet_ip(addr: Option<&PingoraAddr>) -> Option<IpAddr> {
    match addr? {
        PingoraAddr::Inet(addr) => Some(addr.ip()),
        _ => None,
    }
}

/// Writes `ip` in its text form into `buf` and returns the length. IPv4 (the common case) is
/// formatted by hand: `fmt` machinery costs more per request than the rest of the phase that
/// writes forwarding headers.
pub fn format_ip(ip: IpAddr, buf: &mut [u8; 64]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(_) => {
            let mut w = &mut buf[..];
            let _ = write!(w, "{ip}");
            64 - w.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_ip_matches_display() {
        let mut buf = [0u8; 64];
        for ip in ["0.0.0.0", "1.2.3.4", "10.0.99.100", "255.255.255.255", "192.168.0.10", "::1", "2001:db8::7"] {
            let parsed: IpAddr = ip.parse().unwrap();
            let len = format_ip(parsed, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip);
        }
        for n in 0..=255u8 {
            let ip = IpAddr::from([n, 255 - n, n / 3, 7]);
            let len = format_ip(ip, &mut buf);
            assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), ip.to_string());
        }
    }
}
