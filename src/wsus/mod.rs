//! The WSUS protocols: the SOAP envelope they share, and server-to-server
//! sync ([MS-WSUSSS]) with an upstream (Microsoft Update, a WSUS, another
//! upcache).

pub mod client;
pub mod soap;
pub mod sync;
