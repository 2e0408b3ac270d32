//! Update metadata: the whole documents an upstream serves ([MS-WUSP] 2.2),
//! what upcache derives from them, and where they are kept.
//!
//! - `update_xml`: the streaming parser of one document;
//! - `xml`: start tags as every reader of update documents reads them;
//! - `store`: revisions (stable local ids), documents (compressed), links
//!   (prerequisites, bundles, supersedence) and files, in SQLite;
//! - `project`: the catalog's view of them (updates and files), so that
//!   approvals, rules and content serving work on synced updates as on
//!   imported ones.

pub mod project;
mod schema;
pub mod store;
pub mod update_xml;
pub mod xml;

pub use schema::apply_once;
pub use store::{Category, MetaError, MetaStore};
pub use update_xml::{Kind, UpdateInfo};
