//! Vigil as a carrier's client: answering the digest challenges a trunk's
//! carrier puts to requests Vigil sends ([`auth`]), and the registration
//! Vigil keeps with a trunk's registrar ([`registration`]).
//!
//! Sans-IO like the rest of the core: the call layer and the engine send what
//! these return, through their transaction layer.

pub mod auth;
pub mod registration;
