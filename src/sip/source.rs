//! Where a request really came from: the socket address the transport read it from, never a
//! header. The allow-list, the rate limits, digest and the logs all use it.
//!
//! The top Via's `received` and `rport` only decide where responses go (RFC 3261 18.2.2,
//! RFC 3581). rsipstack 0.7.14 keeps a `received` the peer wrote itself when the Via's sent-by
//! equals the real source, so a caller could have the answers sent to a third party. The
//! [`ViaFromSocket`] inspector rewrites the top Via of every request from the socket address:
//! the peer's own `received` and `rport` values are dropped and set again from what the
//! socket saw.

use std::net::SocketAddr;

use rsipstack::sip::prelude::{HeadersExt, ToTypedHeader};
use rsipstack::sip::{Param, SipMessage, Transport};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::{SipAddr, SipConnection};

/// The socket address a server transaction's request came from: the datagram's source for
/// UDP, the connection's peer for TCP and TLS.
pub fn transport_source(tx: &Transaction) -> Option<SocketAddr> {
    tx.connection
        .as_ref()?
        .get_remote_addr()?
        .get_socketaddr()
        .ok()
}

/// Rewrites the top Via of each received request from the real source address.
#[derive(Debug, Default, Clone, Copy)]
pub struct ViaFromSocket;

impl MessageInspector for ViaFromSocket {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        msg
    }

    fn after_received(&self, msg: SipMessage, from: Option<&SipAddr>) -> SipMessage {
        let SipMessage::Request(mut req) = msg else {
            return msg;
        };
        let Some(addr) = from.and_then(|f| f.get_socketaddr().ok()) else {
            return req.into();
        };
        let transport = from.and_then(|f| f.r#type).unwrap_or(Transport::Udp);
        if let Ok(via) = req.via_header_mut() {
            // A Via that does not parse is left alone: the transaction layer refuses it.
            let _ = reset_received(via, addr, transport);
        }
        req.into()
    }
}

/// Drops the peer's `received` and `rport=<n>` (keeping a bare `rport` request), then lets
/// rsipstack add them from the socket address as RFC 3581 wants. `None`: the Via did not
/// parse.
fn reset_received(
    via: &mut rsipstack::sip::Via,
    addr: SocketAddr,
    transport: Transport,
) -> Option<()> {
    via.update_first_value(|v| {
        let mut typed = v.typed()?;
        typed.params.retain(|p| !matches!(p, Param::Received(_)));
        for p in typed.params.iter_mut() {
            if let Param::Rport(port) = p {
                *port = None;
            }
        }
        Ok(typed.into())
    })
    .ok()?;
    SipConnection::build_via_received(via, addr, transport).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via_after(value: &str, from: &str) -> String {
        let mut via = rsipstack::sip::Via::new(value);
        reset_received(&mut via, from.parse().unwrap(), Transport::Udp).unwrap();
        via.value().to_string()
    }

    #[test]
    fn a_received_written_by_the_peer_is_replaced_by_the_real_source() {
        // Sent-by equals the real source: the forged received goes, nothing is added.
        let v = via_after(
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;received=127.0.0.2",
            "127.0.0.1:5070",
        );
        assert!(!v.contains("received"), "{v}");
        // Sent-by elsewhere (NAT): received and rport name the socket address.
        let v = via_after(
            "SIP/2.0/UDP 192.0.2.1:5999;branch=z9hG4bK-2;received=198.51.100.7;rport=1",
            "127.0.0.1:5071",
        );
        assert!(v.contains("received=127.0.0.1"), "{v}");
        assert!(v.contains("rport=5071"), "{v}");
        assert!(
            !v.contains("198.51.100.7") && !v.contains("rport=1;"),
            "{v}"
        );
        // Only the top Via changes.
        let v = via_after(
            "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-3;received=127.0.0.2, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-x;received=10.9.9.9",
            "127.0.0.1:5070",
        );
        assert!(v.contains("received=10.9.9.9"), "{v}");
        assert_eq!(v.matches("received").count(), 1, "{v}");
    }
}
