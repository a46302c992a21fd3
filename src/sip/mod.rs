//! SIP call control on rsipstack: the endpoint, the calls' dialogs and SDP for the phone leg.

pub mod call;
pub mod sdp;
pub mod server;

pub use call::{EndReason, PhoneEvent, SipCall};
pub use server::{CallHandler, IncomingCall, SipServer};
