//! Shared fixtures for Serin's end-to-end tests (the tests live in tests/tests/).
