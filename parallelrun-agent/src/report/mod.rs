//! The mismatch log: writing it and following it.
