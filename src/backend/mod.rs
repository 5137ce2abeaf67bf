//! One module per database kind: how a grant's role and scope map onto that backend's access
//! model. Pure functions only; the I/O lives in `azure/`.

pub mod cosmos;
