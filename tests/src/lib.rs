//! Test harness for privileged integration tests.
