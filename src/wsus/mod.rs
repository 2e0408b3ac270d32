//! The WSUS protocols: the SOAP envelope they share, server-to-server sync
//! ([MS-WSUSSS]) with an upstream (Microsoft Update, a WSUS, another
//! upcache) and as one (`upstream`), and the client protocol ([MS-WUSP]).

pub mod client;
pub mod soap;
pub mod sync;
pub mod upstream;
