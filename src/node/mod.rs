//! The running node: its shared state ([`App`]) and, on a follower, the
//! link that keeps its catalog in step with a primary's ([`follow`]).

mod app;
pub mod follow;

pub use app::App;
