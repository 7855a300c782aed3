//! Integration scenarios of mailpipe, against real RabbitMQ, Redis and SMTP
//! servers. One binary, one module per area (see `mailpipe_tests` for the
//! harness).

mod adaptive;
mod ambiguous;
mod archive;
mod bounces;
mod broker;
mod durability;
mod end_to_end;
mod failures;
mod faults;
mod metrics;
mod observability;
mod operator;
mod policy;
mod providers;
mod qualification;
mod quality;
mod redis_cluster;
mod request_controls;
mod retry_lane;
mod rules;
mod sentinel;
mod site_scripts;
mod sites;
mod smtp_session;
mod store_scripts;
mod throttling;
mod unicode;
mod waiting;
