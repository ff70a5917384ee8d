//! The client's IP address: the socket peer, unless the peer is a trusted proxy that named
//! the client in the configured header.

use std::net::IpAddr;

use pingora_http::RequestHeader;

use crate::config::ClientIpSettings;

/// The client IP for a request from `peer`. With a header configured and `peer` trusted,
/// the header's addresses are read from the right, skipping trusted proxies; the first
/// untrusted one is the client (as nginx's `real_ip_recursive`).
pub fn resolve(peer: IpAddr, req: &RequestHeader, settings: &ClientIpSettings) -> IpAddr {
    let Some(header) = &settings.header else {
        return peer;
    };
    let trusted = |ip: IpAddr| settings.trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for value in req.headers.get_all(header.as_str()).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(ip) => client = ip,
                Ok(ip) => return ip,
                Err(_) => return client,
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn settings() -> ClientIpSettings {
        ClientIpSettings {
            header: Some("x-forwarded-for".into()),
            trusted_proxies: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        }
    }

    fn req(xff: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("x-forwarded-for", xff).unwrap();
        r
    }

    #[test]
    fn untrusted_peers_cannot_choose_their_ip() {
        let peer: IpAddr = "203.0.113.1".parse().unwrap();
        assert_eq!(resolve(peer, &req("1.2.3.4"), &settings()), peer);
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let ip = resolve(peer, &req("6.6.6.6, 198.51.100.7, 10.0.0.9"), &settings());
        assert_eq!(ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(resolve(peer, &req("garbage"), &settings()), peer);
    }
}
