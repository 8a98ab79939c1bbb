#!/usr/bin/perl
# qwex-shim.pl --run-dir DIR [--exit-fallback PATH] [--grace-ms N] -- PROGRAM [ARG...]
#
# The Perl twin of libexec/qwex-shim.c, for installations where no C compiler
# built that one: the parent of one run's command, and nothing else. It keeps
# the contract written at the top of qwex-shim.c (a-d, f-i: the same command
# line, shim.json, exit.json, fd 3 lines and exit statuses), with these
# differences, because Perl has no portable spelling for them:
# - e: it cannot make itself a child subreaper (prctl), so a descendant that
#   left the command's process group (setsid) and lost its parent is out of
#   reach. Forwarded signals (f) and the clean-up after the command (g) go to
#   the process group only (killpg); "leftovers" is 1 when the group outlived
#   the command, else 0.
# - i: the child's signal mask is reset on Linux when /proc says it is not
#   empty (loading POSIX then); elsewhere it is inherited (Node's spawn, our
#   starter, passes an empty one). Dispositions are reset everywhere.
# - Signals cannot be blocked without POSIX: until the command runs they are
#   only remembered, and forwarded once it does; while the exit status is
#   written they are ignored.
#
# Perl because perl-base is essential on Debian and perl ships with macOS:
# a few MB and a few ms per run, where a Node process costs tens of both.
#
# It loads no module at all (not even strict or warnings, which cost a third
# of its start-up time; IO::Handle, only for fsync, costs four times what
# perl itself does). The open(2) flags and the fsync system call number come
# from a table for Linux and macOS; only on a platform outside it are Fcntl
# and IO::Handle loaded. Errno numbers used here (ENOENT 2, EINTR 4, EIO 5,
# EBADF 9, EEXIST 17, EINVAL 22, ENOSPC 28, EROFS 30) are the same on both.
#
# It also takes the command line of earlier versions, "qwex-shim.pl
# RUN_DIR/exit.json PROGRAM [ARG...]", for a qwexd started before an upgrade.
#
# QWEX_FSYNC=0 skips every fsync, as in qwex and qwex-shim.c.
#
# Test hook: QWEX_SHIM_TEST_STOP_BEFORE_GO=1 makes it stop itself (SIGSTOP)
# after writing shim.json and before releasing the child.

my ($EINTR, $EIO, $EEXIST, $EINVAL, $ENOSPC, $ENOENT) = (4, 5, 17, 22, 28, 2);
my $POLL_SECONDS = 0.02;
my $KILL_WAIT_SECONDS = 5;

my $report;
# Before anything else is opened, fd 3 is whoever started us, or nothing.
$report = undef unless open($report, '>&=', 3);

sub report {
    my ($line) = @_;
    return unless $report;
    syswrite($report, "$line\n");
    close($report);
    $report = undef;
}

sub say {
    syswrite(STDERR, "qwex-shim: $_[0]\n");
}

sub usage {
    say("$_[0]\nusage: qwex-shim --run-dir DIR [--exit-fallback PATH] [--grace-ms N] -- PROGRAM [ARG...]");
    report("failed $EINVAL");
    exit 2;
}

my ($run_dir, $exit_fallback, $grace_ms, @command) = (undef, undef, 2000);
my $has_command;
# The command line before this contract, "qwex-shim.pl RUN_DIR/exit.json PROGRAM [ARG...]",
# is still taken: a qwexd started before an upgrade starts its runs with it.
if (@ARGV >= 2 && $ARGV[0] =~ m{^(.+)/exit\.json$}) {
    $run_dir = $1;
    shift @ARGV;
    @command = @ARGV;
    @ARGV = ();
    $has_command = 1;
}
while (@ARGV) {
    my $arg = shift @ARGV;
    if ($arg eq '--') { @command = @ARGV; $has_command = 1; last }
    elsif ($arg eq '--run-dir' && @ARGV) { $run_dir = shift @ARGV }
    elsif ($arg eq '--exit-fallback' && @ARGV) { $exit_fallback = shift @ARGV }
    elsif ($arg eq '--grace-ms' && @ARGV) {
        $grace_ms = shift @ARGV;
        usage('--grace-ms needs a number of milliseconds (0 to 86400000)') unless $grace_ms =~ /^\d{1,8}$/ && $grace_ms <= 86400000;
    }
    else { say("unknown or incomplete option: $arg"); usage('see the usage below') }
}
usage('--run-dir is required') unless defined $run_dir && $run_dir ne '';
usage('the command goes after --') unless $has_command && @command;
$exit_fallback = undef if defined $exit_fallback && $exit_fallback eq '';

# Until the command runs, a signal is remembered, and forwarded once it does.
my %pending;
$SIG{$_} = sub { $pending{$_[0]} = 1 } for qw(TERM INT HUP QUIT USR1);
$SIG{PIPE} = 'IGNORE';

my $hold = ($ENV{QWEX_SHIM_TEST_STOP_BEFORE_GO} // '') eq '1';
delete $ENV{QWEX_SHIM_TEST_STOP_BEFORE_GO};

# ---- platform table ---------------------------------------------------------

my ($O_WRONLY, $O_CREAT, $O_EXCL, $O_TRUNC, $SYS_fsync, $ENOTSUP) = (1);
if ($^O eq 'darwin') {
    ($O_CREAT, $O_EXCL, $O_TRUNC, $SYS_fsync, $ENOTSUP) = (0x200, 0x800, 0x400, 95, 45);
} elsif ($^O eq 'linux') {
    # The machine perl was built for, from its ELF header: the system call
    # numbers differ between architectures, the open flags only on a few.
    my %fsync_by_machine = (62 => 74, 3 => 118, 40 => 118, 183 => 82, 243 => 82, 258 => 82, 20 => 118, 21 => 118, 22 => 118);
    if (open(my $exe, '<', '/proc/self/exe')) {
        my $header = '';
        if ((sysread($exe, $header, 20) // 0) == 20 && substr($header, 0, 4) eq "\x7fELF") {
            my $class = ord(substr($header, 4, 1));
            my $machine = unpack(ord(substr($header, 5, 1)) == 1 ? 'v' : 'n', substr($header, 18, 2));
            # x86-64 with 32-bit ELF is the x32 ABI, with other numbers.
            if (exists $fsync_by_machine{$machine} && !($machine == 62 && $class != 2)) {
                ($O_CREAT, $O_EXCL, $O_TRUNC, $SYS_fsync, $ENOTSUP) = (0100, 0200, 01000, $fsync_by_machine{$machine}, 95);
            }
        }
        close($exe);
    }
}
unless (defined $O_CREAT) {
    require Fcntl;
    ($O_WRONLY, $O_CREAT, $O_EXCL, $O_TRUNC) = (Fcntl::O_WRONLY(), Fcntl::O_CREAT(), Fcntl::O_EXCL(), Fcntl::O_TRUNC());
    $ENOTSUP = -1;
}

my $fsync_enabled = ($ENV{QWEX_FSYNC} // '') ne '0';

sub fsync_handle {
    my ($fh) = @_;
    return 1 unless $fsync_enabled;
    unless (defined $SYS_fsync) {
        require IO::Handle;
        return $fh->sync;
    }
    for (;;) {
        return 1 if syscall($SYS_fsync, fileno($fh)) == 0;
        return 0 unless $! + 0 == $EINTR;
    }
}

# Some filesystems cannot fsync a directory; the rename is atomic all the same. 0 or an errno.
sub fsync_dir {
    my ($dir) = @_;
    return 0 unless $fsync_enabled;
    open(my $dh, '<', $dir) or return $! + 0;
    my $ok = fsync_handle($dh);
    my $errno = $! + 0;
    close($dh);
    return 0 if $ok || grep { $errno == $_ } ($EINVAL, $ENOTSUP, 30, 9);
    return $errno || $EIO;
}

# ---- files -----------------------------------------------------------------

# Field 22 of /proc/PID/stat, as src/process-info.ts reads it (Linux only).
sub start_time {
    my ($pid) = @_;
    return undef unless $^O eq 'linux';
    open(my $fh, '<', "/proc/$pid/stat") or return undef;
    my $stat = '';
    sysread($fh, $stat, 4096);
    close($fh);
    my $at = rindex($stat, ')');
    return undef if $at < 0;
    my @fields = split(/ /, substr($stat, $at + 2));
    return $fields[19];
}

sub write_all {
    my ($fh, $data) = @_;
    while (length $data) {
        my $n = syswrite($fh, $data);
        if (!defined $n) {
            next if $! + 0 == $EINTR;
            return 0;
        }
        if ($n == 0) { $! = $ENOSPC; return 0 }
        substr($data, 0, $n) = '';
    }
    return 1;
}

# Writes a file beside PATH, fsyncs, renames over PATH, fsyncs the directory: 0 or an errno.
sub write_atomic {
    my ($path, $data) = @_;
    my ($dir, $base) = $path =~ m{^(.*)/([^/]*)$} ? (($1 eq '' ? '/' : $1), $2) : ('.', $path);
    my $tmp = "$dir/.$base.$$.tmp";
    my $fh;
    sysopen($fh, $tmp, $O_WRONLY | $O_CREAT | $O_TRUNC, 0600) or return $! + 0;
    my $ok = write_all($fh, $data) && fsync_handle($fh);
    my $errno = $! + 0;
    if (!close($fh) && $ok) { $ok = 0; $errno = $! + 0 }
    if ($ok && !rename($tmp, $path)) { $ok = 0; $errno = $! + 0 }
    if (!$ok) {
        unlink($tmp);
        return $errno || $EIO;
    }
    return fsync_dir($dir);
}

sub errno_text {
    local $! = $_[0];
    return "$!";
}

# h. Never lost, never torn or empty: the run dir, else the fallback, else both again every second.
sub write_exit {
    my ($exit_code, $signal, $errno, $leftovers) = @_;
    $SIG{$_} = 'IGNORE' for qw(TERM INT HUP QUIT USR1);
    my $json = sprintf('{"exitCode":%s,"signal":%s,"errno":%s,"leftovers":%d}', (map { defined $_ ? $_ : 'null' } ($exit_code, $signal, $errno)), $leftovers) . "\n";
    my $primary = "$run_dir/exit.json";
    my $said;
    for (;;) {
        my $e1 = write_atomic($primary, $json);
        return unless $e1;
        my $e2;
        if (defined $exit_fallback) {
            $e2 = write_atomic($exit_fallback, $json);
            unless ($e2) {
                say("cannot write $primary (" . errno_text($e1) . '); wrote the exit status to the fallback path');
                return;
            }
        }
        unless ($said) {
            say("cannot write $primary (" . errno_text($e1) . '); retrying every second');
            say("cannot write $exit_fallback (" . errno_text($e2) . ') either') if defined $exit_fallback;
            $said = 1;
        }
        sleep 1;
    }
}

# ---- start -----------------------------------------------------------------

# Perl opens pipes close-on-exec: the child's end of $exec_w closes on a
# successful exec, so EOF there means the program runs.
my ($go_r, $go_w, $exec_r, $exec_w);
unless (pipe($go_r, $go_w) && pipe($exec_r, $exec_w)) {
    report('failed ' . ($! + 0));
    exit 4;
}

my $pid = fork();
unless (defined $pid) {
    report('failed ' . ($! + 0));
    exit 4;
}

if ($pid == 0) {
    close($go_w);
    close($exec_r);
    setpgrp(0, 0);
    for my $name (keys %SIG) {
        $SIG{$name} = 'DEFAULT' unless $name =~ /^(?:KILL|STOP|ZERO|__)/;
    }
    if ($^O eq 'linux' && open(my $status, '<', '/proc/self/status')) {
        my $text = '';
        sysread($status, $text, 8192);
        close($status);
        if ($text =~ /^SigBlk:\s*([0-9a-f]+)/m && $1 =~ /[1-9a-f]/) {
            require POSIX;
            POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
        }
    }
    # Every descriptor but 0-2 and our two pipes goes: listed first, closed after.
    my %keep = (fileno($go_r) => 1, fileno($exec_w) => 1);
    if (opendir(my $fds, $^O eq 'linux' ? '/proc/self/fd' : '/dev/fd')) {
        my @open = grep { /^\d+$/ && $_ > 2 && !$keep{$_} } readdir($fds);
        closedir($fds);
        for my $fd (@open) {
            my $handle;
            close($handle) if open($handle, '<&=', $fd);
        }
    }
    my ($n, $byte);
    do { $n = sysread($go_r, $byte, 1) } while (!defined $n && $! + 0 == $EINTR);
    exit 125 unless $n; # the shim died before releasing us: run nothing
    close($go_r);
    exec { $command[0] } @command;
    syswrite($exec_w, $! + 0);
    close($exec_w);
    exit 127;
}

close($go_r);
close($exec_w);
setpgrp($pid, $pid); # the child does it too; whoever is first wins the race harmlessly

sub abandon_child {
    close($go_w);
    kill('KILL', $pid);
    waitpid($pid, 0);
}

# b. shim.json, complete and durable before the command may run.
my $shim_json = "$run_dir/shim.json";
my ($shim_start, $child_start) = (start_time($$), start_time($pid));
my $json = defined $shim_start && defined $child_start
    ? qq({"shimPid":$$,"shimStartTime":"$shim_start","pid":$pid,"pgid":$pid,"startTime":"$child_start"}\n)
    : qq({"shimPid":$$,"pid":$pid,"pgid":$pid}\n);
my $fh;
my $opened;
do { $opened = sysopen($fh, $shim_json, $O_WRONLY | $O_CREAT | $O_EXCL, 0600) } while (!$opened && $! + 0 == $EINTR);
unless ($opened) {
    my $errno = $! + 0;
    abandon_child();
    if ($errno == $EEXIST) {
        report('exists');
        exit 3;
    }
    say("cannot create $shim_json: " . errno_text($errno));
    report("failed $errno");
    exit 4;
}
{
    my $n;
    # One write(): a reader sees all of it or a torn file, never a mix of two.
    do { $n = syswrite($fh, $json) } while (!defined $n && $! + 0 == $EINTR);
    my $errno = !defined $n ? $! + 0 : $n != length($json) ? $ENOSPC : 0;
    $errno = $! + 0 || $EIO if !$errno && !fsync_handle($fh);
    $errno = $! + 0 || $EIO if !close($fh) && !$errno;
    $errno = fsync_dir($run_dir) unless $errno;
    if ($errno) {
        unlink($shim_json);
        abandon_child();
        say("cannot write $shim_json: " . errno_text($errno));
        report("failed $errno");
        exit 4;
    }
}
kill('STOP', $$) if $hold;

# c. Release the child; the close-on-exec pipe says whether exec worked.
{
    my $n;
    do { $n = syswrite($go_w, 'g') } while (!defined $n && $! + 0 == $EINTR);
    close($go_w); # if that failed (EPIPE), the child was killed from outside; waitpid says how
}
my $exec_errno = '';
for (;;) {
    my $n = sysread($exec_r, my $buf, 64);
    if (!defined $n) { next if $! + 0 == $EINTR; last }
    last if $n == 0;
    $exec_errno .= $buf;
}
close($exec_r);
if ($exec_errno ne '') {
    waitpid($pid, 0);
    $exec_errno = $EIO unless $exec_errno =~ /^\d+$/;
    write_exit($exec_errno == $ENOENT ? 127 : 126, undef, $exec_errno, 0);
    report("failed $exec_errno");
    exit 0;
}
report("started $pid");

# f. Forward signals to the command's process group until it ends.
my $kill_now;
sub forward {
    my ($name) = @_;
    if ($name eq 'USR1') {
        $kill_now = 1;
        kill('KILL', -$pid);
    } else {
        kill($name, -$pid);
    }
}
$SIG{$_} = \&forward for qw(TERM INT HUP QUIT USR1);
forward($_) for grep { $pending{$_} } qw(USR1 TERM INT HUP QUIT);

my ($waited, $status);
# Perl runs signal handlers inside waitpid and then waits again.
do { $waited = waitpid($pid, 0) } until ($waited == $pid || ($waited == -1 && $! + 0 != $EINTR));
$status = $?;

# g. What is left of the group gets SIGTERM, then SIGKILL after the grace period.
my $leftovers = 0;
if (kill(0, -$pid)) {
    $leftovers = 1;
    $SIG{$_} = sub { $kill_now = 1 if $_[0] eq 'USR1' } for qw(TERM INT HUP QUIT USR1);
    kill('TERM', -$pid);
    kill('CONT', -$pid);
    my $steps = int($grace_ms / 1000 / $POLL_SECONDS);
    while (!$kill_now && $steps-- > 0 && kill(0, -$pid)) {
        select(undef, undef, undef, $POLL_SECONDS);
    }
    $steps = int($KILL_WAIT_SECONDS / $POLL_SECONDS);
    while (kill(0, -$pid) && $steps-- > 0) {
        kill('KILL', -$pid);
        select(undef, undef, undef, $POLL_SECONDS);
    }
}

# h.
if ($waited != $pid) {
    write_exit(undef, undef, undef, $leftovers);
} elsif ($status & 127) {
    write_exit(undef, $status & 127, undef, $leftovers);
} else {
    write_exit($status >> 8, undef, undef, $leftovers);
}
exit 0;
