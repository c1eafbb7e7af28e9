//! The shared scenarios, each run twice: under async-std and under smol,
//! with the driver task spawned on that runtime's own executor. One more
//! test uses the crate's built-in executor.

use redial_async_std::{AsyncIo, Builder};

fn on_async_std(url: String) -> Builder {
    let rt = AsyncIo::with_spawner(|task| {
        async_std::task::spawn(task);
    });
    Builder::new(rt, url)
}

fn on_smol(url: String) -> Builder {
    let rt = AsyncIo::with_spawner(|task| smol::spawn(task).detach());
    Builder::new(rt, url)
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod async_std_runtime {
            $(
                #[test]
                fn $name() {
                    async_std::task::block_on(redial_driver::testing::$name(super::on_async_std));
                }
            )*
        }
        mod smol_runtime {
            $(
                #[test]
                fn $name() {
                    smol::block_on(redial_driver::testing::$name(super::on_smol));
                }
            )*
        }
    };
}

scenarios!(
    connect_send_receive,
    reconnect_delivers_outage_messages,
    close_4001_is_terminal,
    burst_then_close_keeps_order,
    retry_after_is_honoured,
    half_open_is_detected,
    graceful_close,
    dropping_handles_closes,
    token_provider_once_per_dial,
    token_in_query,
    send_waits_for_room,
    send_and_feed_keep_order,
    feed_across_reconnect,
    feed_waits_for_slow_server,
    feed_refusals,
    too_large_message_closes_1009,
    too_large_frame_follows_the_policy,
    untrusted_certificate_is_terminal,
    trusted_root_connects,
    largest_frame_arrives,
    unsent_frames_survive_a_drop,
    endpoints_rotate_to_a_live_node,
    calls_across_a_drop,
    close_while_events_go_unread,
    stats_count_dials_disconnects_and_messages,
    state_watch_keeps_only_the_latest,
);

#[test]
fn built_in_executor() {
    smol::block_on(redial_driver::testing::connect_send_receive(
        redial_async_std::builder,
    ));
}
