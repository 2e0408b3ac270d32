//! Keeping the store healthy while it serves: the size cap and its
//! evictions ([`quota`]), re-hashing stored files ([`scrub`]), and removing
//! files no update needs ([`cleanup`]).

pub mod cleanup;
pub mod quota;
pub mod scrub;
