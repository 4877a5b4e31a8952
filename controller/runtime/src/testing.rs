//! Test doubles for the runtime's and the platforms' tests (feature `test-support`): never part
//! of a production build.

pub mod receiver;
