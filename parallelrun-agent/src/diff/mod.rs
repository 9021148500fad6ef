//! Comparing the old response with the new one.
