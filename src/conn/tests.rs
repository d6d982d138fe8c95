//! A connection phase by phase, over a real loopback socket pair: the test writes the client's
//! bytes and reads the server's, and steps the connection by hand as the driver would.
