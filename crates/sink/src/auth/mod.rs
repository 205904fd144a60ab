//! SMTP AUTH (RFC 4954) for the sink: the users file ([`users`]) and the
//! server side of each SASL exchange ([`sasl`]), built on the protocol
//! crate's mechanisms ([`mailstorm_proto::sasl`]). No I/O here: the session
//! feeds client lines in and writes the returned [`Step`] out.
//!
//! By default (no user table) any well-formed, non-empty credentials are
//! accepted; with a [`Users`] table they are checked.

mod sasl;
mod users;

pub use mailstorm_proto::sasl::Mechanism;
pub use sasl::{AuthExchange, AuthFailure, Step};
pub use users::{AuthError, Users};

#[cfg(test)]
mod tests;
