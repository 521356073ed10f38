package dev.limactl.train;

import dev.limactl.engine.LimaException;
import dev.limactl.engine.LimaStatus;
import dev.limactl.engine.ModelConfig;
import dev.limactl.plan.MemoryPlan;
import java.util.List;
import java.util.Locale;

/**
 * How full fine-tuning runs on one device, decided at the training start from {@code training.offload}
 * and the memory of each way ({@link MemoryPlan#singleGpu}): plain (weights, gradients and AdamW state on
 * the device) or with the optimiser offloaded to the host. {@code auto} keeps the plain mode when it fits
 * the device and offloads when only that fits; when neither fits, the start is refused with the figures.
 * The report lists every mode (full, offload, LoRA, QLoRA) with its device and host bytes.
 */
final class OffloadChoice {
    /** offload: the trainer's setting; report: the per-mode table and what was chosen, null when nothing was weighed. */
    record Decision(boolean offload, String report) {}

    private OffloadChoice() {}

    /**
     * @param setting     training.offload: auto, on or off
     * @param adapter     an adapter run (LoRA/QLoRA): its optimiser state is small and stays with it
     * @param device      training.device (cpu, cuda, cuda:N)
     * @param deviceFree  free bytes of the device (ignored on the CPU)
     * @param hostFree    available host bytes (<= 0: unknown)
     */
    static Decision decide(String setting, boolean adapter, boolean distributed, String device, ModelConfig c, long tokens,
                           boolean recompute, int loraR, long deviceFree, long hostFree) {
        if (adapter) return new Decision(false, null);
        if (distributed) {
            if (setting.equals("on"))
                throw new LimaException(LimaStatus.INVALID_ARGUMENT, "training.offload: on is for one process; data-parallel ranks shard"
                        + " the optimiser state over the ranks instead (distributed.zero_stage)");
            return new Decision(false, null);
        }
        if (device.equals("cpu")) {  // nothing to offload to: `on` runs the same split (for testing it), saving nothing
            return new Decision(setting.equals("on"), setting.equals("on")
                    ? "training.offload: on: the CPU runs the offloaded optimiser's split (unit by unit, on a host worker); it saves no memory here"
                    : null);
        }
        List<MemoryPlan.Single> modes = MemoryPlan.singleGpu(c, tokens, recompute, Math.max(1, loraR));
        MemoryPlan.Single full = modes.get(0), off = modes.get(1);
        boolean fullFits = full.device() <= deviceFree;
        boolean offFits = off.device() <= deviceFree && (hostFree <= 0 || off.host() <= hostFree);
        boolean offload = switch (setting) {
            case "on" -> true;
            case "off" -> false;
            default -> !fullFits && offFits;
        };
        StringBuilder r = new StringBuilder(String.format(Locale.ROOT, "memory per mode on %s (%s free; host %s available; %,d tokens"
                + " per micro-batch):", device, gib(deviceFree), hostFree > 0 ? gib(hostFree) : "unknown", tokens));
        for (MemoryPlan.Single s : modes)
            r.append(String.format(Locale.ROOT, " %s %s%s;", s.mode().name().toLowerCase(Locale.ROOT), gib(s.device()),
                    s.host() > 0 ? " + host " + gib(s.host()) : ""));
        r.setLength(r.length() - 1);
        boolean refuse = setting.equals("auto") ? !fullFits && !offFits : offload ? !offFits : false;
        if (refuse) {
            throw new LimaException(LimaStatus.OUT_OF_MEMORY, r + ". "
                    + (offload && setting.equals("on") ? "training.offload is on but offload does not fit"
                            : "Neither full fine-tuning nor offload fits")
                    + ": lower training.micro_batch_tokens, train an adapter (adapter.type lora or qlora), or use several devices");
        }
        r.append(". Chosen: ").append(offload ? "offload" : "full").append(setting.equals("auto")
                ? offload ? " (full fine-tuning does not fit the device; training.offload auto)" : " (it fits; training.offload auto)"
                : " (training.offload " + setting + ")");
        return new Decision(offload, r.toString());
    }

    private static String gib(long b) {
        return String.format(Locale.ROOT, "%.1f GiB", b / 1073741824.0);
    }
}
