//! The Redis Cluster and Sentinel harnesses: they come up healthy, and their faults do what
//! they say (a forced failover moves the primary; a slot migration moves a slot's keys).

use leadership_testkit::harness::{RedisCluster, RedisSentinel};

#[test]
fn a_cluster_serves_every_slot_fails_over_and_migrates_a_slot() {
    let cluster = RedisCluster::start(3, 1).expect("redis cluster");
    assert_eq!(cluster.nodes().len(), 6);
    assert!(
        cluster.url().starts_with("redis+cluster://127.0.0.1:"),
        "{}",
        cluster.url()
    );
    for node in cluster.nodes() {
        let info = node.command(&["CLUSTER", "INFO"]).expect("cluster info");
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:6"), "{info}");
    }

    // Replica 3 is master 0's: a forced failover makes it serve master 0's slots.
    assert_eq!(cluster.master_of(0).expect("slot 0"), 0);
    cluster.failover(3).expect("failover");
    assert_eq!(cluster.master_of(0).expect("slot 0"), 3);

    let slot = cluster.slot_of("{tag}k").expect("keyslot");
    let owner = cluster.master_of(slot).expect("owner");
    cluster
        .node(owner)
        .command(&["SET", "{tag}k", "v"])
        .expect("set on the owner");
    let to = if owner == 1 { 2 } else { 1 };
    cluster.migrate_slot(slot, to).expect("migrate");
    assert_eq!(cluster.master_of(slot).expect("new owner"), to);
    assert_eq!(
        cluster.node(to).command(&["GET", "{tag}k"]).expect("get"),
        "v"
    );
}

#[test]
fn a_sentinel_setup_fails_over_on_request_and_after_a_kill() {
    let mut setup = RedisSentinel::start("leaders").expect("redis sentinel");
    assert_eq!(setup.sentinel_ports().len(), 3);
    assert!(
        setup.url().starts_with("redis+sentinel://127.0.0.1:"),
        "{}",
        setup.url()
    );
    assert!(setup.url().ends_with("/leaders"), "{}", setup.url());
    assert_eq!(setup.primary(), Some(0));

    setup.failover().expect("forced failover");
    assert_eq!(setup.primary(), Some(1));

    setup.kill9(1).expect("kill the primary");
    setup
        .wait_for_failover(Some(setup.server(1).port()))
        .expect("failover after a kill");
    assert_eq!(setup.primary(), Some(0));
}
