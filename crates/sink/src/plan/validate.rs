//! Whole-rule checks (run while parsing, see [`super::model::Checked`]) and
//! compilation of a parsed plan into the form the engine evaluates.
//!
//! - `validate/rule_checks.rs`: [`Check`](super::model::Check) for
//!   [`RuleSpec`](super::model::RuleSpec), the consistency of one rule;
//! - `validate/compile.rs`: [`compile_rule`], a checked rule into the
//!   [`Rule`] the engine evaluates;
//! - `validate/parts.rs`: the delay distribution, time window and header
//!   condition, which both of them build (so what passes the checks
//!   compiles).

mod compile;
mod parts;
mod rule_checks;

pub(crate) use compile::{compile_rule, Rule};
