// Package inventory reads the YAML file that lists a lab's hosts: how to
// reach each one, what it offers (tags), whose tasks it runs and how many
// at once. It validates the whole file offline and reports every problem
// with its file, line and field, because the file is edited by hand and
// checked in CI long before a coordinator loads it.
//
// The file has three top-level keys, and unknown keys are errors at every
// level:
//
//	defaults:             # optional: settings every host inherits
//	  user: tester
//	host_groups:          # optional: host groups, settings their hosts inherit
//	  rack1:
//	    port: 2222
//	    tags: [10g]
//	hosts:                # required: the hosts, in order
//	  - name: h1          # required, unique; a name as in tasks.ValidName
//	    host_group: rack1 # optional: the host group to inherit from
//	    transport: ssh    # ssh (default) or local (a shim run as the coordinator's child)
//	    address: 10.0.0.2 # ssh: required; host name, IP address or ~/.ssh/config alias
//	    port: 22          # ssh: 1..65535; unset leaves it to ~/.ssh/config (22)
//	    user: tester      # ssh: unset leaves it to ~/.ssh/config or the coordinator's user
//	    identity_file: ~/.ssh/id_ed25519   # ssh: unset uses ssh-agent and ~/.ssh/config
//	    jump: bastion     # ssh: an SSH host of this inventory, or [user@]host[:port]
//	    known_hosts: ~/.ssh/known_hosts    # ssh: unset uses the user's
//	    host_key_policy: strict            # ssh: strict (default) or accept-new
//	    tags: [10g, bbr]  # what the host offers; a task runs where its tags ⊆ these
//	    groups: [lab]     # required: the task groups it serves (whose tasks it runs)
//	    slots: 2          # tasks at once, 1..1024, default 1
//	    env: {K: V}       # set for every task; names must not start with MITO_
//	    artifacts: auto   # auto (default), direct (host uploads to S3) or relay (through the link)
//	    bootstrap:        # steps run by `hosts bootstrap`, in order
//	      - run: sudo apt-get install -y iperf3
//	      - copy: {src: files/x.conf, dst: /etc/x.conf, mode: "0644"}
//
// A host's groups: are the task groups it serves; the top-level
// host_groups: are host groups, groups of hosts that share settings, and a
// host names its own under host_group:, so that the two kinds of group are
// never confused.
//
// # Inheritance
//
// defaults and host groups take any host setting except name and host_group.
// A host's settings are those of defaults, then of its host group, then
// its own, each level overriding the one before:
//
//   - scalars (transport, address, port, user, slots, ...): the last one
//     given wins; an explicit empty string ("") clears an inherited value,
//     such as `jump: ""` on the bastion itself when defaults set a jump;
//   - tags: the union of all levels, sorted and de-duplicated;
//   - env: merged by name, the last level given wins for each name;
//   - groups and bootstrap: the last list given replaces earlier ones,
//     because who may use a host and how it is set up are decisions, not
//     accumulations.
//
// A level whose transport (its own or inherited) is local must not set SSH
// settings (address, port, user, identity_file, jump, known_hosts,
// host_key_policy): that is an error naming the field. SSH settings a local
// host merely inherits are ignored.
//
// # Paths
//
// Local paths (identity_file, known_hosts, copy src) starting with "~/"
// are expanded against the home directory of the user running mito, and
// relative ones are taken relative to the inventory file's directory, so
// the file means the same from any working directory. A copy dst is a
// path on the host: absolute, or starting with "~/" for the remote user's
// home, which the host resolves.
//
// # Jump hosts
//
// A jump that names a host of the inventory refers to that host, which
// must be an SSH host; the connection goes through it with its own
// settings (address, user, identity, known_hosts, policy), and through its
// own jump in turn. Chains must not loop. Any other value containing '@'
// or ':' is a jump host outside the inventory, "[user@]host[:port]"
// (brackets around an IPv6 address with a port), reached with the target
// host's identity, known_hosts and policy. Any other value is an error.
package inventory
