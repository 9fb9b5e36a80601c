/*
 * ecliptic-sandbox: the init and the entry point of a local-cloud server's sandbox.
 *
 *   ecliptic-sandbox boot [--net NSPATH] --hostname H --lower DIRS --upper DIR --work DIR
 *                         --root DIR --console FILE [--cgroup PROCS]... [--grace SECONDS]
 *                         [--ro-bind SRC --at DST]...
 *       Joins the cgroups (PROCS files) and the network namespace, makes new PID, mount,
 *       UTS, IPC and cgroup namespaces, and forks the server's init (PID 1 inside): it
 *       mounts the root (overlayfs: LOWER dirs, UPPER, WORK) on ROOT, /proc, a read-only
 *       /sys, a minimal /dev, /dev/pts, /dev/shm, /run and /tmp, pivots into it, drops
 *       capabilities and installs the seccomp filter, then reaps orphans and forwards
 *       SIGTERM until the server stops. Prints the init's PID once it is ready. Each
 *       --ro-bind makes host folder SRC visible, read-only, at DST inside.
 *
 *   ecliptic-sandbox enter --pid PID --start TICKS [--cgroup PROCS]... [--cwd DIR]
 *                          [--output FILE] [--detach] -- ARGV...
 *       Runs ARGV inside the sandbox whose init is PID (started at TICKS, field 22 of
 *       /proc/PID/stat: a recycled PID is refused): joins the cgroups and every namespace,
 *       drops capabilities, installs the seccomp filter and execs. Waits and exits with
 *       ARGV's status (dies of the same signal); with --detach prints ARGV's PID and returns
 *       at once (the process then belongs to the init). --output: ARGV's standard output
 *       and error are appended to FILE (a host path, opened before entering).
 *
 * Nothing from inside the sandbox runs before capabilities are dropped: the root's files
 * are only opened by the kernel's execve of ARGV, after the drop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CGROUPS 8
#define MAX_BINDS 8
#define EXIT_SETUP 125

static const char *prog = "ecliptic-sandbox";

static void die(const char *fmt, ...) {
    va_list ap;
    int e = errno;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (e) fprintf(stderr, ": %s", strerror(e));
    fputc('\n', stderr);
    _exit(EXIT_SETUP);
}

/* ------------------------------------------------------------------ capabilities */

/* What root inside keeps: a container runtime's default set, less CAP_MKNOD. */
static const int keep_caps[] = {
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
    CAP_SETPCAP, CAP_NET_BIND_SERVICE, CAP_NET_RAW, CAP_SYS_CHROOT, CAP_AUDIT_WRITE,
    CAP_SETFCAP,
};

static int kept(int cap) {
    for (size_t i = 0; i < sizeof keep_caps / sizeof keep_caps[0]; i++)
        if (keep_caps[i] == cap) return 1;
    return 0;
}

static void drop_caps(void) {
    int last = CAP_LAST_CAP;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f) {
        if (fscanf(f, "%d", &last) != 1) last = CAP_LAST_CAP;
        fclose(f);
    }
    for (int c = 0; c <= last; c++)
        if (!kept(c) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL)
            die("dropping capability %d from the bounding set", c);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    for (size_t i = 0; i < sizeof keep_caps / sizeof keep_caps[0]; i++) {
        int c = keep_caps[i];
        data[c / 32].effective |= 1u << (c % 32);
        data[c / 32].permitted |= 1u << (c % 32);
    }
    if (syscall(SYS_capset, &hdr, data) != 0) die("capset");
}

/* ------------------------------------------------------------------ seccomp */

/* Calls no server may make: the kernel keyring (not namespaced), new namespaces (from
 * inside they would only widen the kernel surface), kernel modules, kexec, BPF,
 * perf events, userfaultfd, swap, reboot, accounting, the clock. Most also need a
 * capability the server does not have: this is the second wall. */
static const int denied[] = {
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_unshare, SYS_setns, SYS_mount,
    SYS_umount2, SYS_pivot_root, SYS_init_module, SYS_finit_module, SYS_delete_module,
    SYS_kexec_load, SYS_kexec_file_load, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd,
    SYS_swapon, SYS_swapoff, SYS_reboot, SYS_acct, SYS_settimeofday, SYS_clock_settime,
    SYS_clock_adjtime, SYS_adjtimex, SYS_open_by_handle_at, SYS_name_to_handle_at,
    SYS_syslog, SYS_quotactl, SYS_lookup_dcookie, SYS_fsopen, SYS_fsmount, SYS_fsconfig,
    SYS_fspick, SYS_open_tree, SYS_move_mount, SYS_mount_setattr, SYS_io_uring_setup,
    SYS_io_uring_enter, SYS_io_uring_register,
};
#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | \
                  CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP)

static void install_seccomp(void) {
#if defined(__x86_64__)
    const unsigned n = sizeof denied / sizeof denied[0];
    struct sock_filter prog_[2 * (sizeof denied / sizeof denied[0]) + 16];
    unsigned i = 0;
    /* Other architectures (i386, x32) than the one we check: refused. */
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                               offsetof(struct seccomp_data, arch));
    prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                               offsetof(struct seccomp_data, nr));
    prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    for (unsigned k = 0; k < n; k++) {
        prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, denied[k], 0, 1);
        prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    }
    /* clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc fall
     * back to clone, whose flags it can. */
    prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 3);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                               offsetof(struct seccomp_data, args[0]));
    prog_[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
    prog_[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog fprog = {.len = (unsigned short)i, .filter = prog_};
    if (i > sizeof prog_ / sizeof prog_[0]) {
        errno = 0;
        die("seccomp program too long");
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) die("seccomp");
#else
#error "ecliptic-sandbox's seccomp filter is written for x86_64"
#endif
}

/* ------------------------------------------------------------------ helpers */

static void join_cgroups(char **procs, int n) {
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    for (int i = 0; i < n; i++) {
        int fd = open(procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, buf, (size_t)len) != len) die("joining cgroup %s", procs[i]);
        close(fd);
    }
}

static void close_fds_from(int lowest) {
    if (syscall(SYS_close_range, lowest, ~0U, 0) == 0) return;
    for (int fd = lowest; fd < 1024; fd++) close(fd);
}

static void xmount(const char *src, const char *dst, const char *type, unsigned long flags,
                   const char *data) {
    if (mount(src, dst, type, flags, data) != 0) die("mount %s on %s", type ? type : src, dst);
}

static void xmkdir(const char *path, mode_t mode) {
    if (mkdir(path, mode) != 0 && errno != EEXIST) die("mkdir %s", path);
}

static void bind_file(const char *src, const char *dst, unsigned long extra) {
    int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("creating %s", dst);
    close(fd);
    xmount(src, dst, NULL, MS_BIND, NULL);
    if (extra) xmount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | extra, NULL);
}

/* A path below the new root, before pivoting: ROOT + "/" + rel. */
static char *under(const char *root, const char *rel) {
    char *p;
    if (asprintf(&p, "%s/%s", root, rel) < 0) die("out of memory");
    return p;
}

static void read_only_bind(const char *path) {
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) {
        if (errno == ENOENT) return;
        die("bind %s", path);
    }
    xmount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

static void mask_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode))
        xmount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0");
    else
        xmount("/dev/null", path, NULL, MS_BIND, NULL);
}

static void make_dev(const char *root) {
    char *dev = under(root, "dev");
    xmount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC | MS_NODEV,
           "mode=755,size=64k,nr_inodes=64");
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char *src = under("/dev", nodes[i]), *dst = under(dev, nodes[i]);
        bind_file(src, dst, 0);
        free(src);
        free(dst);
    }
    char *pts = under(dev, "pts"), *shm = under(dev, "shm");
    xmkdir(pts, 0755);
    xmount("devpts", pts, "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=0620");
    xmkdir(shm, 01777);
    xmount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k");
    static const char *links[][2] = {{"pts/ptmx", "ptmx"}, {"/proc/self/fd", "fd"},
                                     {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
                                     {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        char *dst = under(dev, links[i][1]);
        if (symlink(links[i][0], dst) != 0 && errno != EEXIST) die("symlink %s", dst);
        free(dst);
    }
    free(pts);
    free(shm);
    free(dev);
}

static int console = 1;

static void log_line(const char *fmt, ...) {
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dprintf(console, "%s init: %s\n", ts, msg);
}

/* ------------------------------------------------------------------ boot */

struct boot_opts {
    const char *net, *hostname, *lower, *upper, *work, *root, *console;
    char *cgroups[MAX_CGROUPS];
    int ncgroups;
    int grace;
    char *bind_src[MAX_BINDS], *bind_dst[MAX_BINDS];
    int nbinds;
};

static void mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        xmkdir(path, 0755);
        *p = '/';
    }
    xmkdir(path, 0755);
}

static void build_root(const struct boot_opts *o) {
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("making / private");
    char *opts;
    if (asprintf(&opts, "lowerdir=%s,upperdir=%s,workdir=%s", o->lower, o->upper, o->work) < 0)
        die("out of memory");
    xmount("overlay", o->root, "overlay", MS_NODEV, opts);
    free(opts);
    static const char *dirs[] = {"proc", "sys", "dev", "run", "tmp"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        char *p = under(o->root, dirs[i]);
        xmkdir(p, 0755);
        free(p);
    }
    char *p = under(o->root, "proc");
    xmount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    free(p);
    p = under(o->root, "sys");
    xmount("sysfs", p, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    free(p);
    make_dev(o->root);
    for (int i = 0; i < o->nbinds; i++) {
        p = under(o->root, o->bind_dst[i] + 1);
        mkdirs(p);
        xmount(o->bind_src[i], p, NULL, MS_BIND | MS_REC, NULL);
        xmount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
        free(p);
    }
    p = under(o->root, "run");
    xmount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=65536k");
    free(p);
    p = under(o->root, "tmp");
    xmount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=1048576k");
    free(p);
    /* /proc's windows on the whole machine: read-only or hidden. */
    static const char *ro[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus",
                               "proc/fs"};
    for (size_t i = 0; i < sizeof ro / sizeof ro[0]; i++) {
        p = under(o->root, ro[i]);
        read_only_bind(p);
        free(p);
    }
    static const char *masked[] = {"proc/kcore", "proc/keys", "proc/timer_list",
                                   "proc/sched_debug", "proc/acpi", "proc/scsi",
                                   "sys/firmware", "proc/kallsyms", "proc/kmsg",
                                   "proc/kpageflags", "proc/kpagecount", "proc/kpagecgroup",
                                   "proc/slabinfo", "proc/vmallocinfo"};
    for (size_t i = 0; i < sizeof masked / sizeof masked[0]; i++) {
        p = under(o->root, masked[i]);
        mask_path(p);
        free(p);
    }
    if (chdir(o->root) != 0) die("chdir %s", o->root);
    if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
    if (umount2(".", MNT_DETACH) != 0) die("detaching the host's root");
    if (chdir("/") != 0) die("chdir /");
}

/* The host paths in the init's command line are no business of the server's processes. */
static char *argv_area;
static size_t argv_len;

static void hide_command_line(void) {
    if (argv_area && argv_len > 4) {
        memset(argv_area, 0, argv_len);
        memcpy(argv_area, "init", 4);
    }
}

static void disable_ipv6(void) {
    /* IPv4 only: security groups and port security filter IPv4 (and ARP). */
    static const char *knobs[] = {"/proc/sys/net/ipv6/conf/all/disable_ipv6",
                                  "/proc/sys/net/ipv6/conf/default/disable_ipv6"};
    for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++) {
        int fd = open(knobs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0) continue; /* no IPv6 in this kernel */
        if (write(fd, "1", 1) != 1) die("writing %s", knobs[i]);
        close(fd);
    }
}

static int init_main(const struct boot_opts *o, int ready_fd, int console_fd) {
    prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    if (o->net) disable_ipv6();
    if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP) != 0)
        die("unshare");
    if (sethostname(o->hostname, strlen(o->hostname)) != 0) die("sethostname");
    console = console_fd;
    build_root(o);
    log_line("started, hostname %s", o->hostname);
    hide_command_line();
    prctl(PR_SET_NAME, "init", 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGCHLD);
    sigaddset(&wanted, SIGTERM);
    sigaddset(&wanted, SIGINT);
    sigaddset(&wanted, SIGPWR);
    int sfd = signalfd(-1, &wanted, SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    install_seccomp();
    drop_caps();
    /* Not dumpable: the server's processes cannot ptrace it nor reopen its descriptors
     * (the console log, a host file) through /proc/1/fd. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (dup2(console_fd, 1) < 0 || dup2(console_fd, 2) < 0) die("console");
    close(console_fd);
    console = 1;
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    char ok = 1;
    if (write(ready_fd, &ok, 1) != 1) die("reporting readiness");
    close(ready_fd);
    int stopping = 0;
    struct timespec deadline = {0, 0};
    for (;;) {
        struct signalfd_siginfo si;
        if (stopping) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec >= deadline.tv_sec) {
                log_line("processes still running after %d s: stopping them", o->grace);
                return 0; /* the kernel kills what is left of the namespace */
            }
            /* Poll a second at most so the deadline is kept. */
            struct timespec left = {1, 0};
            siginfo_t info;
            int s = sigtimedwait(&wanted, &info, &left);
            if (s < 0) continue;
            si.ssi_signo = (uint32_t)s;
        } else {
            ssize_t r = read(sfd, &si, sizeof si);
            if (r != (ssize_t)sizeof si) continue;
        }
        if (si.ssi_signo == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            }
            if (stopping && pid < 0 && errno == ECHILD) {
                log_line("stopped");
                return 0;
            }
        } else if (!stopping) {
            stopping = 1;
            log_line("signal %d: stopping every process (grace %d s)", (int)si.ssi_signo,
                     o->grace);
            kill(-1, SIGTERM);
            clock_gettime(CLOCK_MONOTONIC, &deadline);
            deadline.tv_sec += o->grace;
            if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD) {
                log_line("stopped");
                return 0;
            }
        }
    }
}

static int cmd_boot(int argc, char **argv) {
    struct boot_opts o = {0};
    argv_area = argv[-1];
    argv_len = (size_t)(argv[argc - 1] + strlen(argv[argc - 1]) - argv[-1]);
    o.grace = 10;
    static const struct option longopts[] = {
        {"net", required_argument, 0, 'n'},     {"hostname", required_argument, 0, 'h'},
        {"lower", required_argument, 0, 'l'},   {"upper", required_argument, 0, 'u'},
        {"work", required_argument, 0, 'w'},    {"root", required_argument, 0, 'r'},
        {"console", required_argument, 0, 'c'}, {"cgroup", required_argument, 0, 'g'},
        {"grace", required_argument, 0, 't'},   {"ro-bind", required_argument, 0, 'b'},
        {"at", required_argument, 0, 'a'},      {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'n': o.net = strdup(optarg); break;
        case 'h': o.hostname = strdup(optarg); break;
        case 'l': o.lower = strdup(optarg); break;
        case 'u': o.upper = strdup(optarg); break;
        case 'w': o.work = strdup(optarg); break;
        case 'r': o.root = strdup(optarg); break;
        case 'c': o.console = strdup(optarg); break;
        case 't': o.grace = atoi(optarg); break;
        case 'b':
            if (o.nbinds == MAX_BINDS) die("too many --ro-bind");
            o.bind_src[o.nbinds] = strdup(optarg);
            o.bind_dst[o.nbinds] = NULL;
            o.nbinds++;
            break;
        case 'a':
            if (!o.nbinds || o.bind_dst[o.nbinds - 1] || optarg[0] != '/')
                die("--at DST (absolute) follows each --ro-bind SRC");
            o.bind_dst[o.nbinds - 1] = strdup(optarg);
            break;
        case 'g':
            if (o.ncgroups == MAX_CGROUPS) die("too many --cgroup");
            o.cgroups[o.ncgroups++] = optarg;
            break;
        default: errno = 0; die("boot: unknown option");
        }
    }
    errno = 0;
    if (!o.hostname || !o.lower || !o.upper || !o.work || !o.root || !o.console)
        die("boot needs --hostname, --lower, --upper, --work, --root and --console");
    for (int i = 0; i < o.nbinds; i++)
        if (!o.bind_dst[i]) die("--ro-bind %s needs --at DST", o.bind_src[i]);
    int console_fd = open(o.console, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (console_fd < 0) die("opening %s", o.console);
    join_cgroups(o.cgroups, o.ncgroups);
    if (o.net) {
        int nfd = open(o.net, O_RDONLY | O_CLOEXEC);
        if (nfd < 0) die("opening %s", o.net);
        if (setns(nfd, CLONE_NEWNET) != 0) die("entering %s", o.net);
        close(nfd);
    }
    if (unshare(CLONE_NEWPID) != 0) die("unshare(CLONE_NEWPID)");
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) die("pipe");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        close(pipefd[0]);
        setsid();
        _exit(init_main(&o, pipefd[1], console_fd));
    }
    close(pipefd[1]);
    close(console_fd);
    char ok = 0;
    ssize_t r = read(pipefd[0], &ok, 1);
    if (r != 1 || ok != 1) {
        int status = 0;
        waitpid(pid, &status, 0);
        errno = 0;
        die("the server's init failed to start (status %d)", status);
    }
    printf("%d\n", (int)pid);
    return 0;
}

/* ------------------------------------------------------------------ enter */

static long start_ticks(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    p += 2;
    /* fields after ")" start at field 3; the start time is field 22 */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p, ' ');
        if (p) p++;
    }
    return p ? strtol(p, NULL, 10) : -1;
}

static int cmd_enter(int argc, char **argv) {
    pid_t target = 0;
    long want_start = -1;
    const char *cwd = "/", *output = NULL;
    char *cgroups[MAX_CGROUPS];
    int ncgroups = 0, detach = 0;
    static const struct option longopts[] = {
        {"pid", required_argument, 0, 'p'},    {"start", required_argument, 0, 's'},
        {"cgroup", required_argument, 0, 'g'}, {"cwd", required_argument, 0, 'd'},
        {"detach", no_argument, 0, 'D'},       {"output", required_argument, 0, 'o'},
        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (c) {
        case 'p': target = (pid_t)atoi(optarg); break;
        case 's': want_start = atol(optarg); break;
        case 'd': cwd = optarg; break;
        case 'D': detach = 1; break;
        case 'o': output = optarg; break;
        case 'g':
            if (ncgroups == MAX_CGROUPS) die("too many --cgroup");
            cgroups[ncgroups++] = optarg;
            break;
        default: errno = 0; die("enter: unknown option");
        }
    }
    errno = 0;
    if (target <= 0 || optind >= argc) die("enter needs --pid and a command after --");
    char **cmd = argv + optind;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int out_fd = -1;
    if (output) {
        out_fd = open(output, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (out_fd < 0) die("opening %s", output);
    }
    static const struct { const char *name; int type; } nss[] = {
        {"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS},
        {"net", CLONE_NEWNET},       {"pid", CLONE_NEWPID}, {"mnt", CLONE_NEWNS}};
    int fds[6];
    for (int i = 0; i < 6; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)target, nss[i].name);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0) die("the server is not running (%s)", path);
    }
    /* The namespaces are pinned by the fds: check they are the init's we were told of. */
    if (want_start >= 0 && start_ticks(target) != want_start) {
        errno = 0;
        die("the server is not running (its init %d is gone)", (int)target);
    }
    join_cgroups(cgroups, ncgroups);
    for (int i = 0; i < 6; i++) {
        if (setns(fds[i], nss[i].type) != 0) die("entering the %s namespace", nss[i].name);
        close(fds[i]);
    }
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) != 0) die("pipe");
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        close(errpipe[0]);
        if (detach) setsid();
        if (out_fd >= 0 && (dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)) die("output");
        if (errpipe[1] != 3) {
            if (dup3(errpipe[1], 3, O_CLOEXEC) < 0) die("dup");
            close(errpipe[1]);
        }
        close_fds_from(4);
        install_seccomp();
        drop_caps();
        if (chdir(cwd) != 0 && chdir("/") != 0) die("chdir");
        execvp(cmd[0], cmd);
        int e = errno;
        if (write(3, &e, sizeof e) < 0) _exit(127);
        _exit(e == ENOENT ? 127 : 126);
    }
    close(errpipe[1]);
    if (out_fd >= 0) close(out_fd);
    int e = 0;
    ssize_t r = read(errpipe[0], &e, sizeof e);
    close(errpipe[0]);
    if (r == (ssize_t)sizeof e) {
        fprintf(stderr, "%s: cannot run %s: %s\n", prog, cmd[0], strerror(e));
        waitpid(pid, NULL, 0);
        return e == ENOENT ? 127 : 126;
    }
    if (detach) {
        printf("%d\n", (int)pid);
        return 0;
    }
    sigset_t fwd;
    sigemptyset(&fwd);
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaddset(&fwd, forwarded[i]);
    for (;;) {
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            if (WIFEXITED(status)) return WEXITSTATUS(status);
            int sig = WTERMSIG(status);
            struct rlimit none = {0, 0};
            setrlimit(RLIMIT_CORE, &none);
            signal(sig, SIG_DFL);
            sigprocmask(SIG_UNBLOCK, &all, NULL);
            kill(getpid(), sig);
            return 128 + sig;
        }
        siginfo_t info;
        int s = sigwaitinfo(&fwd, &info);
        if (s > 0 && s != SIGCHLD) kill(pid, s);
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s boot|enter ...\n", prog);
        return 2;
    }
    if (strcmp(argv[1], "boot") == 0) return cmd_boot(argc - 1, argv + 1);
    if (strcmp(argv[1], "enter") == 0) return cmd_enter(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command %s\n", prog, argv[1]);
    return 2;
}
