//! Events: written beside every change ([`log`]), their images ([`image`]),
//! read back for the audit log and the change feed ([`read`]), and the
//! wake-up that tells watchers a tenant has new events ([`signal`]).

pub(crate) mod image;
mod insert;
pub(crate) mod log;
pub(crate) mod read;
pub(crate) mod signal;
