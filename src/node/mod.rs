//! The running node: its shared state ([`App`]) and, on a follower, the
//! link that keeps its catalog in step with a primary's ([`follow`]) and
//! the one that sends its clients' reports there ([`forward`]).

mod app;
pub mod follow;
pub mod forward;

pub use app::App;
