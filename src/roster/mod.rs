//! Pure roster logic: the RFC 6121 presence-subscription state machine. The roster service
//! (`services::roster`) applies it to stored items.

pub mod subscription;
