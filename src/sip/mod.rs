//! SIP call control on rsipstack: the endpoint, the calls' dialogs, SDP for the phone leg,
//! trunks (who may call), digest authentication, rate limits, registration, TLS files and bounds on TCP/TLS connections.

pub mod call;
pub mod digest;
pub mod limits;
pub mod register;
pub mod sdp;
pub mod server;
pub mod streams;
pub mod tls;
pub mod trunks;

pub use call::{EndReason, PhoneEvent, SipCall};
pub use server::{CallHandler, IncomingCall, SipServer};
