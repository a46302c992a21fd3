//! SIP call control on rsipstack: the endpoint, the calls' dialogs, SDP for the phone leg,
//! trunks (who may call), a request's real source, digest authentication, rate limits, caps
//! on calls in setup, registration, TLS files and bounds on TCP/TLS connections.

pub mod call;
pub mod caller_id;
pub mod digest;
pub mod early_media;
pub mod headers;
pub mod limits;
pub mod outbound;
pub mod register;
pub mod sdp;
pub mod server;
pub mod setup;
pub mod source;
pub mod streams;
pub mod tls;
pub mod trunks;

pub use call::{EndReason, PhoneEvent, SipCall};
pub use outbound::{Dial, DialError, DialOutcome, Dialer, LegDial, LegOutcome, Outbound};
pub use server::{CallHandler, IncomingCall, SipServer};
