//! The io_uring backend (placeholder until it lands: probing reports it unavailable).

use std::io;
use std::os::fd::OwnedFd;

use super::handler::Handler;
use super::worker::Core;

pub(crate) fn probe() -> Result<(), String> {
    Err("the io_uring backend is not built yet".into())
}

pub(crate) fn run<H: Handler>(core: Core<H>, listener: OwnedFd) -> io::Result<()> {
    super::epoll::run(core, listener)
}
