"""The built-in rules in catalogue order: (id, title, default severity, summary, module).

Written by tools/generate_share.py from the rule modules, which register them; run it after
adding a rule or changing one's title, severity or docstring (tests/test_share.py checks).
"""

# ruff: noqa: E501
# fmt: off
RULES = (
    ("hugepages.unsupported", "Kernel without huge page support", "info", "The kernel has no hugetlb support, so no static huge page pool can exist.", "ai_doctor.rules.hugepages"),
    ("hugepages.shortfall", "Huge page pool smaller than requested", "high", "A huge page pool was requested but the kernel allocated fewer pages.", "ai_doctor.rules.hugepages"),
    ("hugepages.unused", "Static huge page pool reserved but unused", "medium", "A static huge page pool is reserved and every page of it is free.", "ai_doctor.rules.hugepages"),
    ("thp.disabled", "Transparent huge pages disabled", "low", "Transparent huge pages are `never` for the PMD size (2 MiB on x86-64).", "ai_doctor.rules.thp"),
    ("overcommit.strict-headroom", "Strict overcommit leaves no room for the model", "critical", "Under vm.overcommit_memory=2 the model does not fit in CommitLimit − Committed_AS.", "ai_doctor.rules.overcommit"),
    ("overcommit.heuristic-oversize", "Model larger than RAM + swap under heuristic overcommit", "critical", "Under vm.overcommit_memory=0 the kernel refuses one allocation larger than RAM + swap.", "ai_doctor.rules.overcommit"),
    ("overcommit.ratio-ignored", "Overcommit ratio set but ignored", "low", "vm.overcommit_ratio or vm.overcommit_kbytes is set while vm.overcommit_memory is not 2.", "ai_doctor.rules.overcommit"),
    ("memory.headroom", "Not enough memory for the model", "high", "The model is larger than the memory it can get.", "ai_doctor.rules.memory"),
    ("memory.shm-size", "/dev/shm too small for the GPUs here", "high", "/dev/shm is smaller than the GPUs here need.", "ai_doctor.rules.memory"),
    ("cpu.governor", "CPU not on the performance governor", "medium", "A CPU with a frequency policy is not on the `performance` governor.", "ai_doctor.rules.cpu"),
    ("cpu.fixed-frequency", "No CPU frequency scaling", "info", "No CPU frequency scaling is exposed: there are no policies under /sys/devices/system/cpu/cpufreq.", "ai_doctor.rules.cpu"),
    ("storage.scheduler", "NVMe namespace with an I/O scheduler", "medium", "An NVMe namespace uses an I/O scheduler other than `none`.", "ai_doctor.rules.storage"),
    ("storage.scheduler-not-persistent", "NVMe scheduler set by hand, lost at reboot", "low", "An NVMe namespace runs on `none` only because someone set it: the kernel would pick mq-deadline for it at boot, and no udev rule sets it.", "ai_doctor.rules.storage"),
    ("storage.model-network", "Models load from network storage", "medium", "The model path, or a model cache, is on network or FUSE storage.", "ai_doctor.rules.storage"),
    ("kernel.config-missing", "Kernel configuration not found", "low", "Neither /proc/config.gz nor a config file for the running kernel is readable.", "ai_doctor.rules.kernel"),
    ("kernel.config-mismatch", "Kernel configuration of another kernel", "low", "The only kernel configuration found describes another kernel release than the one that runs (in an image, the one it boots by default).", "ai_doctor.rules.kernel"),
    ("kernel.thp-missing", "Kernel built without transparent huge pages", "low", "The kernel is built without transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE unset), or the running kernel shows none (no /sys/kernel/mm/transparent_hugepage).", "ai_doctor.rules.kernel"),
    ("kernel.numa-balancing", "Automatic NUMA balancing on a multi-node machine", "low", "Automatic NUMA balancing (kernel.numa_balancing = 1) is on, on a machine with more than one NUMA node.", "ai_doctor.rules.kernel"),
    ("gpu.driver-missing-for-kernel", "NVIDIA driver installed without a module for the kernel", "critical", "The NVIDIA driver's user space is installed (libnvidia-ml, libcuda, nvidia-smi or a DKMS source tree) but the kernel — the running one, in an image the one it boots by default — has no nvidia module in its modules folder.", "ai_doctor.rules.gpu"),
    ("gpu.module-vermagic-mismatch", "GPU driver module built for another kernel", "critical", "The nvidia (or amdgpu) module installed for a kernel was built for another kernel.", "ai_doctor.rules.gpu"),
    ("gpu.driver-library-mismatch", "NVIDIA kernel module and libraries disagree", "critical", "The loaded NVIDIA kernel module's version differs from the user-space libraries' (libnvidia-ml, libcuda): \"Failed to initialize NVML: Driver/library version mismatch\", and CUDA fails to initialise.", "ai_doctor.rules.gpu"),
    ("gpu.driver-too-old-for-cuda", "NVIDIA driver older than an installed CUDA toolkit needs", "critical", "An installed CUDA toolkit, or the CUDA runtime pip installed for PyTorch and the like, needs a newer driver than the one here.", "ai_doctor.rules.gpu"),
    ("gpu.nouveau-loaded", "nouveau in the NVIDIA driver's way", "high", "nouveau (the open-source driver for NVIDIA GPUs) is loaded, or nothing keeps it from loading, while the NVIDIA driver is installed.", "ai_doctor.rules.gpu"),
    ("gpu.container-runtime", "Container engine cannot hand NVIDIA GPUs to containers", "high", "Docker, Podman or Kubernetes' containerd is installed on a host with NVIDIA GPUs, but nothing lets it hand them to containers; or a CDI spec no longer matches the host.", "ai_doctor.rules.gpu_devices"),
    ("gpu.device-nodes", "GPU device nodes missing, stale or out of reach", "high", "The device files CUDA and ROCm open are missing, carry stale device numbers, or this process may not open them; or the host suspends without preserving video memory.", "ai_doctor.rules.gpu_devices"),
    ("gpu.dev-char-links", "/dev/char links missing for NVIDIA devices under the systemd cgroup driver", "medium", "A container engine manages cgroups through systemd and the NVIDIA device nodes have no /dev/char/MAJOR:MINOR links.", "ai_doctor.rules.gpu_devices"),
    ("gpu.fabric-manager", "NVSwitch system without a running, matching Fabric Manager", "critical", "NVSwitches are present (the driver lists them under /proc/driver/nvidia-nvswitch/devices, or NVIDIA PCI functions of class 0x0680, which the driver claims as NVSwitches, are on the bus) and Fabric Manager is not installed, not running, masked, or its package's version is not exactly the loaded driver's.", "ai_doctor.rules.gpu_platform"),
    ("gpu.module-flavour", "NVIDIA kernel module flavour cannot drive the GPU", "critical", "The nvidia kernel module here is of a flavour that cannot drive a GPU on the bus: a Blackwell or later GPU (GB100, GB202, …) with the proprietary module, or a GPU before Turing (Maxwell GM, Pascal GP, Volta GV) with the open module.", "ai_doctor.rules.gpu_platform"),
    ("gpu.secure-boot-signature", "The kernel refuses the NVIDIA module's signature", "critical", "Secure Boot is on (or module signatures are otherwise enforced) and the nvidia module installed for the kernel is unsigned, or signed by a key the kernel does not trust: it cannot load (`modprobe: ERROR: could not insert 'nvidia': Key was rejected by service`, or \"Operation not permitted\" with \"Lockdown: unsigned module loading is restricted\" in the kernel log), nvidia-smi \"couldn't communicate with the NVIDIA driver\" and CUDA finds no GPU. This is what a DKMS build leaves on a Secure Boot machine when its signing key was never enrolled, or when the enrollment was never completed at the console.", "ai_doctor.rules.gpu_secureboot"),
    ("pci.iommu-p2p", "IOMMU translation or ACS redirect between PCIe GPUs", "medium", "Two or more NVIDIA GPUs talk over PCIe on bare metal (no NVSwitch) and the IOMMU translates their DMA (their IOMMU groups are of type DMA or DMA-FQ), or, read as root, ACS P2P Request or Completion Redirect is set on the ports of a PCIe switch that GPUs share.", "ai_doctor.rules.pci"),
    ("limits.nofile", "Open-files hard limit below 65535", "medium", "The hard open-files limit (RLIMIT_NOFILE) of the serving process is below 65535.", "ai_doctor.rules.limits"),
    ("limits.memlock", "Locked-memory limit too low for RDMA memory registration", "high", "RDMA devices exist (/sys/class/infiniband) and the serving process's locked-memory limit (RLIMIT_MEMLOCK) is not unlimited, while CAP_IPC_LOCK is not effective for it.", "ai_doctor.rules.limits"),
    ("limits.pids", "Process and thread limits hit, or too low for multi-GPU serving", "high", "The pids cgroup of the serving process already refused a fork or thread (`pids.events` `max` above 0), or, on a host with two or more GPUs, its pids.max or RLIMIT_NPROC is below 8192.", "ai_doctor.rules.limits"),
    ("access.permission-denied", "Checks ran on partial data", "medium", "Files the checks need could not be read as this user.", "ai_doctor.rules.access"),
    ("access.readonly-sysctl", "/proc/sys is read-only", "info", "/proc/sys is mounted read-only, as container runtimes do by default.", "ai_doctor.rules.access"),
    ("boot.grub-not-regenerated", "GRUB configuration edited but grub.cfg not regenerated", "medium", "/etc/default/grub (or a /etc/default/grub.d/*.cfg file) gives the kernel command line other parameters than grub.cfg's default entry boots with: the edit was never applied.", "ai_doctor.rules.boot"),
    ("persist.sysctl-drift", "Running sysctl differs from what boot will set", "medium", "A sysctl's value in the running kernel differs from what the next boot sets.", "ai_doctor.rules.persist"),
    ("persist.sysctl-not-applied", "Sysctl files never applied at boot", "low", "Nothing on this host applies the persistent sysctl files at boot.", "ai_doctor.rules.persist"),
    ("persist.sysctl-conf-unread", "/etc/sysctl.conf is never read at boot", "medium", "/etc/sysctl.conf sets keys, but what applies the sysctl files at boot never reads it.", "ai_doctor.rules.persist"),
    ("persist.sysctl-conflict", "One sysctl set to different values in several files", "low", "A sysctl key is set to different values in more than one file.", "ai_doctor.rules.persist"),
    ("persist.sysctl-conf-duplicates", "One sysctl repeated in one file", "low", "The same sysctl key appears more than once in one file.", "ai_doctor.rules.persist"),
    ("persist.rc-local-ineffective", "rc.local tuning that never runs", "medium", "/etc/rc.local (or /etc/rc.d/rc.local) holds tuning that boot never runs.", "ai_doctor.rules.persist"),
)
# fmt: on
