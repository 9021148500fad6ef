//! Replaying captured requests to the new (and secondary) service.
