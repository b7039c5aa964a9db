//! End-to-end tests of the appliance from the outside: real swtpm, the
//! appliance binary, `provision` and the stock `tritonclient`.
//!
//! The tests arrive with the appliance issue; until then the keystore's own
//! crate tests start real swtpm processes themselves.
#![forbid(unsafe_code)]
