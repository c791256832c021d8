#!/bin/sh
# The plan of the tcpwatch-kernels guest (busybox init runs it as sysinit): mount what tcpwatch needs, load the
# lab's modules, run the plan in /etc/plan, print everything to the serial
# console framed by @@BEGIN/@@END lines, and power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp CI=true
# An initramfs built for another architecture than the host's has only sh:
# link the other applets here.
[ -e /bin/mkdir ] || /bin/busybox --install -s
mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /var
ln -sf /run /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname tcpwatch-guest
. /etc/plan

begin() { echo "@@BEGIN $*"; T0=$(cut -d' ' -f1 /proc/uptime); }
end() { echo "@@END $1 rc=$2 secs=$(awk -v t0="$T0" '{printf "%.1f", $1 - t0}' /proc/uptime)"; }

echo "@@GUEST $(uname -r) cpus=$(nproc) mem=$(awk '/MemTotal/{print $2}' /proc/meminfo)kB"
begin modules
rc=0
for m in $MODULES; do
	insmod "/lib/modules/$m" || { echo "@@MODULE-FAIL $m"; rc=1; }
done
end modules $rc

if [ -n "$STEP_CHECK" ]; then
	begin check
	tcpwatch check 2>/tmp/stderr; rc=$?
	echo "@@STDERR"; cat /tmp/stderr
	end check $rc
fi

if [ -n "$STEP_LAB" ]; then
	begin lab-list
	tcpwatch lab list > /tmp/list 2>&1; rc=$?
	cat /tmp/list
	end lab-list $rc
	# With the lab's test package in the guest, its TestScenarios runs every
	# scenario, with more checks than lab run makes (one story per
	# connection, the applications' errors, nothing left behind), and
	# prints each one's lab_result: running them here too would double the
	# guest's lab time for nothing.
	[ -n "$LAB_IN_TESTS" ] && echo "@@LAB-IN-TESTS $LAB_IN_TESTS"
	for s in $(awk 'NR > 1 {print $1}' /tmp/list); do
		[ -n "$LAB_IN_TESTS" ] && break
		if [ -n "$SCENARIOS" ]; then
			case " $SCENARIOS " in *" $s "*) ;; *) continue ;; esac
		fi
		begin lab $s
		tcpwatch lab run "$s" -o json --timeout "$LAB_TIMEOUT" 2>/tmp/stderr; rc=$?
		echo "@@STDERR"; cat /tmp/stderr
		end "lab $s" $rc
		tcpwatch lab cleanup >/dev/null 2>&1
	done
fi

if [ -n "$STEP_TESTS" ]; then
	for t in $TESTS; do
		# t is PKG=DIR: the test runs in its package's directory (testdata).
		pkg=${t%%=*} dir=${t#*=}
		begin test $pkg
		(cd "$dir" && TCPWATCH_LAB_RESULTS=$LAB_IN_TESTS TCPWATCH_LAB_TIMEOUT=$LAB_TIMEOUT "/tests/$(echo "$pkg" | tr / _).test" -test.v -test.timeout="$TEST_TIMEOUT" $TEST_ARGS 2>&1); rc=$?
		end "test $pkg" $rc
		tcpwatch lab cleanup >/dev/null 2>&1
	done
fi

begin dmesg
dmesg | tail -n 400
end dmesg 0
echo "@@DONE"
sync
poweroff -f
