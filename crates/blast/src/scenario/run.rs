//! Runs a scenario: the embedded sink with the plan, the profile against
//! it, then the measurements every expectation is checked against.
