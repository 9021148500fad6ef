//! TCP reassembly: segments to in-order streams per connection and direction.
