package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

const mainUsage = `kmsfs: a transparent encrypting FUSE filesystem; each file has its own data
key, wrapped by a key management service (AWS KMS or the embedded local KMS).

Usage:
  kmsfs init    [--kms local|aws] [--key KEY] [--chunk-size N] [--compress none|s2|zstd] [--plaintext-names] CIPHERDIR
  kmsfs init    --recover CIPHERDIR
  kmsfs mount   [--foreground] [--ro] [--allow-other] CIPHERDIR MOUNTPOINT
  kmsfs unmount MOUNTPOINT
  kmsfs info    [--json] PATH
  kmsfs key     create|list|describe|rotate|enable|disable|alias|policy ...
  kmsfs keysvc  serve|credentials ...
  kmsfs fsck    [--repair] [--zero-unreadable] [--keys] [--json] CIPHERDIR
  kmsfs rewrap  [--key KEY] [--dry-run] [--jobs N] CIPHERDIR
  kmsfs rekey   PATH...
  kmsfs paths   CIPHERDIR --decrypt|--encrypt [--json] PATH...|-
  kmsfs help    [COMMAND]
  kmsfs version

Example:
  kmsfs init ~/secret.enc             # new CIPHERDIR on the local KMS key alias/kmsfs-default
  kmsfs mount ~/secret.enc ~/secret   # returns once the mount is live
  echo hello > ~/secret/a.txt         # stored encrypted in ~/secret.enc/a.txt
  kmsfs info ~/secret/a.txt
  kmsfs unmount ~/secret

Environment:
  KMSFS_KEYSTORE         local keystore directory (else $XDG_DATA_HOME/kmsfs,
                         else ~/.local/share/kmsfs)
  KMSFS_PASSPHRASE_FILE  file holding the keystore passphrase
  AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_KMS, ...  the AWS SDK's usual settings

Exit codes: 0 ok, 1 failure, 2 usage, 3 CIPHERDIR/config/backing file,
4 key service or keystore, 5 mount failed, 6 not implemented yet,
7 unmount failed, 8 rewrap/rekey failed for some files; fsck: 10 problems
found, 11 problems remain after repair, 12 key service unavailable, 13 all
repaired, 14 files busy (10-19 are reserved for fsck).

Run 'kmsfs COMMAND -h' for a command's flags and examples.
`

// commandHelps holds each command's help text, printed by -h and by
// `kmsfs help COMMAND`.
var commandHelps = map[string]string{
	"init": `Usage: kmsfs init [flags] CIPHERDIR

Initialise CIPHERDIR (created if missing; must be empty) as a kmsfs backing
directory: write kmsfs.conf (filesystem ID, format version, KMS kind, key ARN,
chunk size; no secrets) after checking that the key can make and unwrap a
data key.

File names, symlink targets and user xattrs are encrypted (format 2): init
has the key service make the tree's names key, stores it wrapped in
kmsfs.conf and in its copy kmsfs.conf.copy, and writes the root's directory
ID file kmsfs.dirid. --plaintext-names keeps names in plaintext (format 1,
the format of kmsfs before encrypted names; no names key, no copy).

--recover CIPHERDIR restores a lost kmsfs.conf of a format 2 tree from its
copy kmsfs.conf.copy, after checking that the copy's names key unwraps and
opens the root's kmsfs.dirid. It makes no key and changes nothing else; it
refuses when kmsfs.conf exists (move a damaged one aside first).

With --kms local (the default) and no --key, the local KMS key
alias/kmsfs-default is used, and created if it does not exist yet.
With --kms aws, --key is required; the key is checked with DescribeKey and one
test GenerateDataKey + Decrypt, and its ARN is recorded.

Flags:
  --kms local|aws         key service (default local)
  --key KEY               key ID, ARN, alias/NAME or alias ARN
  --chunk-size N          plaintext bytes per chunk: a power of two from 512
                          to 1MiB; suffixes k, KiB, M, MiB (default 4096,
                          64KiB with --compress s2 or zstd)
  --compress ALG          compress new files' chunks before encryption: none,
                          s2 or zstd (default none). Compressed sizes show
                          through the backing files' allocated blocks and
                          reveal something of the content: see doc/SECURITY.md
  --plaintext-names       do not encrypt names (format 1)
  --shared                several hosts mount the tree at once on shared
                          storage (NFSv4, CephFS): kmsfs.conf says so and
                          every mount runs as with mount --shared
  --recover               restore kmsfs.conf of an existing format 2 tree
                          from kmsfs.conf.copy (only with --kms-endpoint,
                          --keystore, --passphrase-file)
  --kms-endpoint URL      AWS KMS endpoint (default $AWS_ENDPOINT_URL_KMS or
                          the SDK's); e.g. a 'kmsfs keysvc serve'
  --keystore DIR          local keystore (see 'kmsfs help')
  --passphrase-file F     keystore passphrase file

Examples:
  kmsfs init /srv/data.enc
  kmsfs init --key alias/team --chunk-size 64k /srv/data.enc
  kmsfs init --kms aws --key alias/kmsfs /srv/data.enc
  kmsfs init --kms aws --kms-endpoint http://127.0.0.1:4599 --key alias/x C
  kmsfs init --plaintext-names /srv/plain-names.enc
  kmsfs init --shared /mnt/nfs/data.enc
  kmsfs init --recover /srv/data.enc
`,
	"mount": `Usage: kmsfs mount [flags] CIPHERDIR MOUNTPOINT

Mount the plaintext view of CIPHERDIR at MOUNTPOINT. Without --foreground the
command starts a background daemon and returns only once the mount is live:
exit 0 and no output on success, else one error line and a non-zero exit.
The daemon logs to --log-file, else to syslog when /dev/log exists, else
nowhere. It unmounts cleanly on SIGINT, SIGTERM or SIGHUP, zeroing its
cached data keys. Stop it with 'kmsfs unmount MOUNTPOINT'.

Flags:
  --foreground            stay attached; log to stderr unless --log-file
  --ro                    mount read-only
  --allow-other           let other users in (always with the kernel's
                          default_permissions checks; needs user_allow_other
                          in /etc/fuse.conf unless root)
  --log-file F            append the daemon's log (text) to F (created 0600;
                          a symbolic link is refused)
  --debug                 log every FUSE request (verbose; no file data or names)
  --cache-max-age D       keep unwrapped data keys at most D (default 5m;
                          0 disables the cache: every open asks the KMS)
  --kms-endpoint URL      AWS KMS endpoint (for --kms aws file systems)
  --metrics ADDR          serve Prometheus metrics at http://ADDR/metrics;
                          ADDR must be a loopback address unless
                          --metrics-any-address
  --metrics-any-address   allow a non-loopback --metrics address (metrics
                          only, no profiler)
  --pprof                 also serve Go's profiler under /debug/pprof/ on the
                          --metrics address (loopback only)
  --writeback-cache       let the kernel cache writes and send them later, in
                          batches: faster small writes, but only for a
                          CIPHERDIR that nothing else changes meanwhile
  --shared                shared storage mode, for a CIPHERDIR other hosts
                          mount at the same time: byte-range locks on backing
                          files, entries and attributes cached at most 100ms,
                          close-to-open consistency (always on for a tree
                          made with init --shared; not with
                          --writeback-cache)
  --keystore DIR          local keystore (see 'kmsfs help')
  --passphrase-file F     keystore passphrase file

Examples:
  kmsfs mount /srv/data.enc /srv/data
  kmsfs mount --metrics 127.0.0.1:9101 /srv/data.enc /srv/data
  kmsfs mount --ro --log-file /var/log/kmsfs.log /srv/data.enc /srv/data
  kmsfs mount --foreground --debug C M      # Ctrl-C unmounts
`,
	"version": `Usage: kmsfs version

Print the module version and the VCS revision the binary was built from, as
far as the build recorded them. Also: kmsfs --version.

Examples:
  kmsfs version
`,
	"help": `Usage: kmsfs help [COMMAND]

Without COMMAND, list the commands and the environment they read; with one,
print its flags and examples (the same text as kmsfs COMMAND -h).

Examples:
  kmsfs help
  kmsfs help mount
`,
	"unmount": `Usage: kmsfs unmount [flags] MOUNTPOINT

Unmount a kmsfs mount (fusermount3 -u, or umount(2) as root) and wait until
its daemon has exited, at most --timeout. The daemon is found through the
state file it keeps in /run/kmsfs (root) or $XDG_RUNTIME_DIR/kmsfs; without
one (a mount made by another user) kmsfs only unmounts. A mount still in
use is not unmounted (exit 7).

Flags:
  --timeout D             how long to wait for the daemon (default 10s)

Examples:
  kmsfs unmount /srv/data
`,
	"info": `Usage: kmsfs info [--json] PATH

Describe one encrypted file: the KMS key and key material (backing-key
version) that wrapped its data key, its file ID, compression (none, s2 or
zstd), chunk size, plaintext and ciphertext sizes, and its path in the
mount and in the backing tree. PATH is a file inside a mounted kmsfs or a
backing file in a CIPHERDIR. No key service is contacted, except in a tree
with encrypted names (format v2), whose names key maps the two paths.

Flags:
  --json                  print one JSON object with the keys key_id,
                          key_material_id, file_id, compression,
                          chunk_size, plaintext_size, ciphertext_size,
                          plain_path, backing_path
  --kms-endpoint URL      AWS KMS endpoint (v2 trees on aws)
  --keystore DIR, --passphrase-file F   the local keystore (v2 trees)

Examples:
  kmsfs info /srv/data/report.pdf
  kmsfs info --json /srv/data.enc/report.pdf | jq -r .key_material_id
`,
	"key": `Usage: kmsfs key SUBCOMMAND [flags] [ARGS]

Manage keys of the local KMS keystore. KEY is a key ID, key ARN, alias/NAME
or alias ARN.

Subcommands:
  create [--description D] [--rotation-period-days N] [--alias alias/NAME]
                          create a key (automatic rotation when N is set,
                          90..2560) and print its ID
  list                    ID, state, aliases, versions, rotation period,
                          last rotation of every key
  describe KEY            all metadata of one key
  rotate KEY              add a backing-key version; new data keys use it,
                          old ones still unwrap
  rotate --kms aws [--kms-endpoint URL] KEY
                          on-demand rotation of an AWS KMS key (or a key of
                          'kmsfs keysvc serve') through the AWS API
  enable KEY | disable KEY
                          a disabled key wraps and unwraps nothing
  schedule-deletion [--days N] KEY | cancel-deletion KEY
                          refuse the key at once and delete it after N days
                          (7..30, default 30) | stop that (the key stays
                          disabled until enabled)
  alias create alias/NAME KEY | alias update alias/NAME KEY |
  alias delete alias/NAME | alias list
  policy get KEY | policy put KEY [FILE]
                          print | replace the key policy (FILE, or standard
                          input); used by 'kmsfs keysvc serve'

Flags (all subcommands):
  --keystore DIR          local keystore (see 'kmsfs help')
  --passphrase-file F     keystore passphrase file

Examples:
  kmsfs key create --description "backups" --alias alias/backups --rotation-period-days 365
  kmsfs key list
  kmsfs key rotate alias/backups
  kmsfs key disable alias/backups        # mounts using it can no longer open files
  kmsfs key alias update alias/backups 1234abcd-12ab-34cd-56ef-1234567890ab
  kmsfs key policy get alias/backups > policy.json && kmsfs key policy put alias/backups policy.json
`,
	"fsck": `Usage: kmsfs fsck [flags] CIPHERDIR

Check every file of CIPHERDIR for damage and tampering: the header, both
copies of the key record (the user.kmsfs.key xattr and the key-record slot
in the file; each is unwrapped by the key service, which checks that it
belongs to this file), every chunk's tag, and the size and flag rules of
chunk/FORMAT.md (truncation, unexpected holes, crash remnants). A key record
naming a KMS key the filesystem does not trust (not the key in kmsfs.conf,
nor one of its previous_keys) is reported as untrusted-key without asking the
KMS: such a file may have been planted, and --repair leaves it. Each finding
is one line on stdout: PATH: file ID: chunk N: KIND: detail. Progress goes to
stderr (a bar on a terminal), a summary to stdout.

In a tree with encrypted names (format v2) fsck also checks every directory's
ID file, every entry name, the sidecars of long names and the targets of
symlinks; PATH is then "PLAIN (backing BACKING)", with ? for a name that does
not decrypt. Kinds: dirid-missing, dirid-bad, name-bad, sidecar-missing,
sidecar-bad, target-bad (problems); sidecar-orphan, temp-leftover,
target-orphan, foreign, dirid-missing of an empty directory (warnings). See
doc/COMMANDS.md.

--repair fixes what loses nothing: a missing or bad copy of the key record
is rewritten from the good one, middle chunks left sealed as final by an
interrupted write are re-sealed, a missing HAS_DATA flag is set, and the
zero tails of compressed chunks that are allocated (a copy that filled the
holes) are punched; the summary says how many bytes that freed. With
--zero-unreadable it also replaces chunks that fail authentication by sealed
zero chunks, accepts a cut at a chunk boundary (the last chunk is re-sealed
as final) and empties a file truncated to empty; each is listed. In a v2
tree --repair also gives an empty directory without ID file a fresh one and
removes orphan sidecars, orphan long-target files and temporaries left by a
crash (never a foreign file); with --force on a mounted tree it leaves those
three alone. --repair refuses to run while CIPHERDIR is mounted, unless
--force.

Each file is checked, and repaired, under its internal locks, so a mount in
shared mode (on this host or another) never writes it meanwhile: --repair
holds a file exclusively while it repairs it; a check reads without locks
and checks a file with findings again with writers held off. A file a
shared-mode mount keeps writing is reported busy (a warning; exit 14 when
nothing else is wrong) unless --wait. Mounts not in shared mode take no
locks: repair only an unmounted tree (or one no such mount writes).

Flags:
  --repair                fix what is safe (see above)
  --zero-unreadable       with --repair: replace unreadable chunks by zeros
  --keys                  count files per key and key material
  --json                  one JSON document on stdout instead of lines
  --jobs N                files checked at once (default 2)
  --force                 repair even though CIPHERDIR is mounted
  --wait                  wait for files a shared-mode mount is writing
  --kms-endpoint URL      AWS KMS endpoint (aws file systems)
  --keystore DIR, --passphrase-file F   the local keystore

Exit codes: 0 clean, 10 problems found, 11 problems remain after --repair,
12 some files not checked (key service unavailable), 13 every problem
repaired, 14 some files not checked (busy: a mount in shared mode kept
writing them); 3 CIPHERDIR or config invalid (or mounted, with --repair),
4 key service or keystore failure.

Examples:
  kmsfs fsck /srv/data.enc
  kmsfs fsck --repair /srv/data.enc
  kmsfs fsck --keys --json /srv/data.enc
`,
	"rewrap": `Usage: kmsfs rewrap [flags] CIPHERDIR

Re-wrap every file's data key under the current key material of its key (or
under --key) with the KMS ReEncrypt call, and replace the key xattr in one
setxattr. File contents are not touched and the plaintext data key never
leaves the KMS. Files already wrapped under the current key material are
skipped, so the command can be run again after an interruption. Safe while
the tree is mounted and in use: a record is replaced under the file's size
lock, and a file a shared-mode mount keeps truncating or extending fails as
busy (run again). Progress goes to stderr (a bar on a terminal), a summary
line to stdout; exit 8 if any file failed.

With --to-kms naming the other key service (and --key one of its keys) the
data keys are moved: each is unwrapped by the current service and wrapped
by the other, so it passes through this process's memory. The tree must be
unmounted; kmsfs.conf is updated once every file has moved. With --key naming
another key of the same service, kmsfs.conf names the new key before the first
file moves and lists the old one in previous_keys, so mounts keep trusting
both; previous_keys is dropped once every file is under the new key (while
the tree is mounted it stays: remount, then run the same command again). A
file whose key record names a key the filesystem does not trust fails and is
left as it is.

A tree with encrypted names (format 2) has one more key to re-wrap, its names
key, in kmsfs.conf and kmsfs.conf.copy: it is done first, under the same
rules (and a failure stops the run before any file), written to the copy and
then to kmsfs.conf: at once, with the config of a --key migration's start,
or with the config of a --to-kms move's end.

Flags:
  --key KEY               wrap under KEY instead of each file's own key
  --to-kms local|aws      move the keys to this key service (needs --key)
  --dry-run               count what would be re-wrapped; change nothing
  --force                 re-wrap files that look current too (AWS KMS does
                          not always report the current key material)
  --jobs N                files re-wrapped at once (default 4)
  --kms-endpoint URL      AWS KMS endpoint (for the aws side)
  --keystore DIR          local keystore (see 'kmsfs help')
  --passphrase-file F     keystore passphrase file

Examples:
  kmsfs key rotate alias/kmsfs-default && kmsfs rewrap /srv/data.enc
  kmsfs rewrap --dry-run /srv/data.enc
  kmsfs rewrap --key alias/new-key --jobs 16 /srv/data.enc
  kmsfs rewrap --to-kms aws --key alias/kmsfs --kms-endpoint http://127.0.0.1:4599 /srv/data.enc
`,
	"rekey": `Usage: kmsfs rekey [flags] PATH...

Give each file a new data key and file ID (after a suspected exposure of
its data key): the content is re-encrypted into a temporary file beside it,
which is fsynced and renamed over the file, so a reader sees the old or the
new file, never a mix. Mode, owner, times, extended attributes and hard
links inside the CIPHERDIR are kept. PATH is a file in a kmsfs mount or a
backing file in a CIPHERDIR. A file written to while it is re-encrypted is
left as it is (run rekey again). Exit 8 if any file failed.

A file a mount in shared mode is writing (on this host or another) is left
as it is and named "busy" (exit 8; run rekey again, or with --wait). A
shared-mode mount's descriptor opened before the rekey fails its next write
with ESTALE instead of losing it. Mounts not in shared mode take no locks:
rekey a file only while no such mount has it open for writing.

Flags:
  --wait                  wait for a busy file instead of leaving it
  --kms-endpoint URL      AWS KMS endpoint (for aws file systems)
  --keystore DIR          local keystore (see 'kmsfs help')
  --passphrase-file F     keystore passphrase file

Examples:
  kmsfs rekey /srv/data/report.pdf
  kmsfs rekey /srv/data.enc/a /srv/data.enc/b
`,
	"paths": `Usage: kmsfs paths [flags] CIPHERDIR --decrypt|--encrypt PATH...

Map paths between the backing tree and the mount without mounting. With
--decrypt, each PATH is a backing path (relative to CIPHERDIR, or absolute
inside it) and the path of the same entry in the mount is printed; with
--encrypt, each PATH is a path in the mount (relative to its root, or
absolute inside a mount of CIPHERDIR) and its backing path, relative to
CIPHERDIR, is printed. One line per PATH; a PATH of - reads paths from
standard input, one per line. A path that cannot be mapped prints an error
on stderr and nothing on stdout (--json pairs inputs and outputs); exit 3
if any failed.

In a tree with encrypted names (format v2) every directory on the way is
read for its ID, and the names key comes from the key service, as for
fsck; in a v1 tree names are the same on both sides (kmsfs's own files are
refused) and no key service is asked. --encrypt needs the directories of
PATH to exist in CIPHERDIR, not the last name itself: run it against a
backup copy of the CIPHERDIR to find a file that is gone from the live one.

Flags:
  --decrypt               backing paths to paths in the mount
  --encrypt               paths in the mount to backing paths
  --json                  one JSON document: cipherdir, mode, and paths
                          (input, output or error per PATH)
  --kms-endpoint URL      AWS KMS endpoint (aws file systems)
  --keystore DIR, --passphrase-file F   the local keystore

Examples:
  kmsfs paths /srv/data.enc --encrypt docs/report.pdf
  kmsfs paths /srv/data.enc --decrypt /srv/data.enc/Xq3…/Ab9…
  find /srv/data.enc -newer stamp | kmsfs paths /srv/data.enc --decrypt -
`,
	"keysvc": `Usage: kmsfs keysvc serve|credentials ...

Serve the local keystore over HTTP as the AWS KMS JSON 1.1 protocol (SigV4
authenticated), and make credentials for it. Run 'kmsfs keysvc serve -h' and
'kmsfs keysvc credentials -h' for their flags.

Examples:
  kmsfs keysvc credentials --admin ci
  kmsfs keysvc credentials --policy host-a.json host-a
  kmsfs keysvc credentials revoke host-a
  kmsfs keysvc serve --listen 127.0.0.1:4599 --audit-log kms-audit.jsonl
`,
}

// commandHelp returns the help text of a command.
func commandHelp(name string) string {
	if h, ok := commandHelps[strings.Fields(name)[0]]; ok {
		return h
	}
	return mainUsage
}

func printUsage(w io.Writer) { fmt.Fprint(w, mainUsage) }

// runHelp implements `kmsfs help [COMMAND]`.
func runHelp(args []string, env *Env) int {
	if len(args) == 0 {
		printUsage(env.Stdout)
		return ExitOK
	}
	h, ok := commandHelps[args[0]]
	if !ok {
		return report(env, usageErrorf("unknown command %q", args[0]))
	}
	fmt.Fprint(env.Stdout, h)
	return ExitOK
}

// version returns the module version and VCS revision the binary was
// built from, as far as the build recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
