//! The schema and its migrations: a database of any earlier version is brought up to
//! `SCHEMA_VERSION` in one transaction (under STATE/store.lock, see `Store::open`).

use super::SCHEMA_VERSION;
use rusqlite::Transaction;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS networks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    driver TEXT NOT NULL,
    bridge TEXT UNIQUE,
    internal INTEGER NOT NULL,
    masquerade INTEGER NOT NULL,
    mtu INTEGER,
    bridge_mac TEXT NOT NULL,
    origin TEXT NOT NULL DEFAULT 'cli',
    bridge_gateway INTEGER NOT NULL DEFAULT 1,
    promisc INTEGER NOT NULL DEFAULT 0,
    dns INTEGER NOT NULL DEFAULT 1,
    dns_domain TEXT,
    ready INTEGER NOT NULL DEFAULT 1,
    policy TEXT NOT NULL DEFAULT 'allow'
);
CREATE TABLE IF NOT EXISTS subnets (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    cidr TEXT NOT NULL UNIQUE,
    gateway TEXT NOT NULL,
    range_start TEXT,
    range_end TEXT,
    cursor TEXT
);
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    sandbox TEXT NOT NULL,
    netns_path TEXT NOT NULL,
    ifname TEXT NOT NULL,
    host_ifname TEXT NOT NULL UNIQUE,
    mac TEXT NOT NULL,
    host_mac TEXT NOT NULL,
    state TEXT NOT NULL,
    container_id TEXT,
    routes TEXT,
    aliases TEXT,
    labels TEXT,
    UNIQUE (network_id, sandbox)
);
CREATE TABLE IF NOT EXISTS allocations (
    subnet_id INTEGER NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
    PRIMARY KEY (subnet_id, ip)
);
CREATE INDEX IF NOT EXISTS allocations_by_attachment ON allocations(attachment_id);
CREATE TABLE IF NOT EXISTS ports (
    attachment_id INTEGER NOT NULL REFERENCES attachments(id) ON DELETE CASCADE,
    family INTEGER NOT NULL,
    host_ip TEXT,
    proto TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    container_ip TEXT NOT NULL,
    container_port INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ports_by_port ON ports(proto, host_port);
CREATE INDEX IF NOT EXISTS ports_by_attachment ON ports(attachment_id);
CREATE TABLE IF NOT EXISTS sandboxes (
    name TEXT PRIMARY KEY
);
";

/// Tables added in version 3 (services and policies).
const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS services (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vip TEXT NOT NULL,
    port INTEGER NOT NULL,
    proto TEXT NOT NULL,
    affinity INTEGER,
    node_port INTEGER,
    UNIQUE (vip, proto, port)
);
CREATE UNIQUE INDEX IF NOT EXISTS services_by_node_port ON services(proto, node_port)
    WHERE node_port IS NOT NULL;
CREATE TABLE IF NOT EXISTS backends (
    id INTEGER PRIMARY KEY,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    port INTEGER NOT NULL,
    UNIQUE (service_id, kind, target, port)
);
CREATE INDEX IF NOT EXISTS backends_by_target ON backends(kind, target);
CREATE TABLE IF NOT EXISTS policies (
    id INTEGER PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    from_sel TEXT NOT NULL,
    to_sel TEXT NOT NULL,
    port INTEGER,
    proto TEXT
);
";

/// Brings a database at `version` up to date.
pub(super) fn migrate(tx: &Transaction, version: i64) -> rusqlite::Result<()> {
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
    }
    if version == 1 {
        // Version 2 added DNS settings and aliases.
        tx.execute_batch(
            "ALTER TABLE networks ADD COLUMN dns INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE networks ADD COLUMN dns_domain TEXT;
             ALTER TABLE networks ADD COLUMN ready INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE attachments ADD COLUMN aliases TEXT;",
        )?;
    }
    if (1..3).contains(&version) {
        // Version 3 added policies and labels.
        tx.execute_batch(
            "ALTER TABLE networks ADD COLUMN policy TEXT NOT NULL DEFAULT 'allow';
             ALTER TABLE attachments ADD COLUMN labels TEXT;",
        )?;
    }
    tx.execute_batch(SCHEMA_V3)?;
    if version < 4 {
        // Version 4: ownership. A bridge knit adopted (never deleted), and the
        // process building a pending record (never reaped while it lives).
        tx.execute_batch(
            "ALTER TABLE networks ADD COLUMN bridge_adopted INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE networks ADD COLUMN owner_pid INTEGER;
             ALTER TABLE networks ADD COLUMN owner_start INTEGER;
             ALTER TABLE attachments ADD COLUMN owner_pid INTEGER;
             ALTER TABLE attachments ADD COLUMN owner_start INTEGER;",
        )?;
    }
    if version < 5 {
        // Version 5: lookups every attach makes (MAC uniqueness, a sandbox's other
        // attachments) by index, so their cost does not grow with the attachments.
        tx.execute_batch(
            "CREATE INDEX IF NOT EXISTS attachments_by_mac ON attachments(network_id, mac);
             CREATE INDEX IF NOT EXISTS attachments_by_host_mac ON attachments(network_id, host_mac);
             CREATE INDEX IF NOT EXISTS attachments_by_sandbox ON attachments(sandbox);",
        )?;
    }
    if version < 6 {
        // Version 6: policy as data. Egress defaults; rules get a direction, an action, a
        // port range and the document they were imported from; each rule's index terms
        // (which attachments may select it), the sets it uses and its atoms (what it
        // allows, one row per kernel key it contributes to) are kept so a change touches
        // only its own rows.
        tx.execute_batch(
            "ALTER TABLE networks ADD COLUMN egress_policy TEXT NOT NULL DEFAULT 'allow';
             ALTER TABLE networks ADD COLUMN egress_dns INTEGER NOT NULL DEFAULT 1;
             ALTER TABLE policies ADD COLUMN dir TEXT NOT NULL DEFAULT 'ingress';
             ALTER TABLE policies ADD COLUMN action TEXT NOT NULL DEFAULT 'allow';
             ALTER TABLE policies ADD COLUMN port_hi INTEGER;
             ALTER TABLE policies ADD COLUMN origin TEXT;
             CREATE INDEX IF NOT EXISTS policies_by_network ON policies(network_id);
             CREATE INDEX IF NOT EXISTS policies_by_origin ON policies(origin);
             CREATE INDEX IF NOT EXISTS policies_by_spec ON policies(network_id, to_sel, from_sel);
             CREATE TABLE IF NOT EXISTS policy_terms (
                 rule_id INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
                 term TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS policy_terms_by_term ON policy_terms(term, rule_id);
             CREATE INDEX IF NOT EXISTS policy_terms_by_rule ON policy_terms(rule_id);
             CREATE TABLE IF NOT EXISTS policy_sets (
                 rule_id INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
                 network_id INTEGER NOT NULL,
                 set_name TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS policy_sets_by_set ON policy_sets(network_id, set_name);
             CREATE INDEX IF NOT EXISTS policy_sets_by_rule ON policy_sets(rule_id);
             CREATE TABLE IF NOT EXISTS policy_atoms (
                 rule_id INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
                 set_name TEXT NOT NULL,
                 own_att INTEGER NOT NULL,
                 far_att INTEGER,
                 own TEXT NOT NULL,
                 far TEXT NOT NULL,
                 proto INTEGER,
                 lo INTEGER,
                 hi INTEGER
             );
             CREATE INDEX IF NOT EXISTS policy_atoms_by_group ON policy_atoms(set_name, own, far, proto);
             CREATE INDEX IF NOT EXISTS policy_atoms_by_rule ON policy_atoms(rule_id);
             CREATE INDEX IF NOT EXISTS policy_atoms_by_own ON policy_atoms(own_att);
             CREATE INDEX IF NOT EXISTS policy_atoms_by_far ON policy_atoms(far_att);",
        )?;
        super::policies::rewrite_legacy_rules(tx)?;
    }
    if version < 7 {
        // Version 7: clusters. This node's membership (one row), and per network the
        // cluster it belongs to: the cluster-wide subnets (this node's blocks are the
        // network's own subnets), its VXLAN segment and this node's VXLAN device.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS cluster_join (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 name TEXT NOT NULL,
                 etcd TEXT NOT NULL,
                 underlay TEXT NOT NULL,
                 underlay_if TEXT NOT NULL,
                 backend TEXT NOT NULL,
                 vni INTEGER NOT NULL,
                 vxlan_port INTEGER NOT NULL,
                 lease_ttl INTEGER NOT NULL,
                 lease_id INTEGER NOT NULL,
                 mtu INTEGER NOT NULL,
                 peers TEXT NOT NULL DEFAULT '[]',
                 etcd_tls TEXT
             );
             ALTER TABLE networks ADD COLUMN cluster TEXT;
             CREATE TABLE IF NOT EXISTS cluster_services (name TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS remote_endpoints (
                 id INTEGER PRIMARY KEY,
                 network TEXT NOT NULL,
                 node TEXT NOT NULL,
                 sandbox TEXT NOT NULL,
                 ips TEXT NOT NULL,
                 labels TEXT NOT NULL,
                 aliases TEXT NOT NULL,
                 UNIQUE (network, node, sandbox)
             );",
        )?;
    }
    if version < 8 {
        // Version 8: the identity of each attachment's namespace (see Attachment).
        tx.execute_batch("ALTER TABLE attachments ADD COLUMN netns_id TEXT;")?;
    }
    if version < 9 {
        // Version 9: what each declarative topology (`knit apply`) created, so a later
        // apply removes what its file no longer declares and `knit destroy` removes only
        // what the topology made. `kind` is network, sandbox, attachment, service or rule;
        // `key` names the object (see store::topologies).
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS topology_objects (
                 topology TEXT NOT NULL,
                 kind TEXT NOT NULL,
                 key TEXT NOT NULL,
                 ident TEXT,
                 PRIMARY KEY (topology, kind, key)
             );",
        )?;
    }
    if version < 10 {
        // Version 10: routes of `knit ingress` kept in the store (`knit ingress route
        // add`): each is one eskip route without its id (`Path("/") -> "http://a:80"`),
        // merged with the routes file of `knit ingress serve`.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS ingress_routes (
                 id TEXT PRIMARY KEY,
                 route TEXT NOT NULL
             );",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}
