//! SIP call control on rsipstack: the endpoint, the calls' dialogs, SDP for the phone leg,
//! trunks (who may call), digest authentication, rate limits, registration and TLS files.

pub mod call;
pub mod caller_id;
pub mod digest;
pub mod limits;
pub mod register;
pub mod sdp;
pub mod server;
pub mod tls;
pub mod trunks;

pub use call::{EndReason, PhoneEvent, SipCall};
pub use server::{CallHandler, IncomingCall, SipServer};
