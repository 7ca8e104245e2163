//! What a response says beyond its status line, each reader a pure function of the response's
//! parts: [`ratelimit`] reads the quota an API reports in its headers.

pub mod ratelimit;
