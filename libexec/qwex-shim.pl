#!/usr/bin/perl
# qwex-shim EXIT_FILE PROGRAM [ARG...]
#
# The parent of one run's command, and nothing else. It starts PROGRAM as the
# leader of its own process group (its stdin, stdout and stderr are this
# process's: /dev/null and the run's log files), waits for it, and writes how
# it ended to EXIT_FILE, atomically. It lives in its own session, so it
# outlives whoever started it (the CLI, a per-run monitor, qwexd), and only
# the parent of a process can learn its exact exit status.
#
# Perl because perl-base is essential on Debian and perl ships with macOS:
# a few MB and a few ms per run, where a Node process costs tens of both.
#
# File descriptor 3, when open, gets one line for whoever started us:
# "started PID" once the program runs, or "failed ERRNO" if it could not be
# executed. Whoever started us may be gone: write errors are ignored.
#
# EXIT_FILE: {"exitCode":N|null,"signal":N|null,"errno":N|null}
#
# It loads no module at all (not even strict or warnings, which cost a third
# of its start-up time), so any perl 5 will do.

my ($exit_file, @command) = @ARGV;
die "usage: qwex-shim EXIT_FILE PROGRAM [ARG...]\n" unless defined $exit_file && @command;

$SIG{PIPE} = 'IGNORE';
$SIG{HUP} = 'IGNORE';

my $report;
$report = undef unless open($report, '>&=', 3);

sub report {
    my ($line) = @_;
    return unless $report;
    syswrite($report, "$line\n");
    close($report);
    $report = undef;
}

sub write_exit {
    my ($exit_code, $signal, $errno) = @_;
    my $json = sprintf('{"exitCode":%s,"signal":%s,"errno":%s}', map { defined $_ ? $_ : 'null' } ($exit_code, $signal, $errno));
    my $tmp = "$exit_file.$$.tmp";
    if (open(my $fh, '>', $tmp)) {
        print $fh "$json\n";
        close($fh);
        rename($tmp, $exit_file);
    }
}

# Perl opens pipes close-on-exec: the child's end closes on a successful exec,
# so EOF here means the program runs, and a number means exec failed.
pipe(my $exec_r, my $exec_w) or do { report('failed ' . ($! + 0)); write_exit(126, undef, $! + 0); exit 0 };

my $pid = fork();
if (!defined $pid) {
    my $errno = $! + 0;
    report("failed $errno");
    write_exit(126, undef, $errno);
    exit 0;
}
if ($pid == 0) {
    close($exec_r);
    setpgrp(0, 0);
    $SIG{PIPE} = 'DEFAULT';
    $SIG{HUP} = 'DEFAULT';
    exec { $command[0] } @command;
    syswrite($exec_w, $! + 0);
    close($exec_w);
    exit 127;
}
close($exec_w);
my $errno = '';
while (sysread($exec_r, my $buf, 64)) { $errno .= $buf; }
close($exec_r);
if ($errno ne '') {
    waitpid($pid, 0);
    report("failed $errno");
    write_exit($errno == 2 ? 127 : 126, undef, $errno);
    exit 0;
}
report("started $pid");

my $waited;
# EINTR is 4 on Linux and macOS; spelling it $!{EINTR} would load Errno.
do { $waited = waitpid($pid, 0) } until ($waited == $pid || ($waited == -1 && ($! + 0) != 4));
my $status = $?;
if ($status & 127) {
    write_exit(undef, $status & 127, undef);
} else {
    write_exit($status >> 8, undef, undef);
}
exit 0;
