//! Serin's CRD types and their validation.
