//! What a response says beyond its status line, each reader a pure function of the response's
//! parts: [`ratelimit`] reads the quota an API reports in its headers, [`grpc`] a gRPC call's
//! status; [`classify`] is the one value that hands the errors an API reported inside a
//! response to the recorder.

pub mod body_errors;
pub mod classify;
pub mod grpc;
pub mod ratelimit;
