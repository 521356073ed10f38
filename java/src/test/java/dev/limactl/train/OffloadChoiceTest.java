package dev.limactl.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.engine.LimaException;
import dev.limactl.engine.LimaStatus;
import dev.limactl.engine.ModelConfig;
import dev.limactl.plan.MemoryPlan;
import org.junit.jupiter.api.Test;

/** The training start's choice between full fine-tuning on the device and the optimiser offloaded to the host. */
class OffloadChoiceTest {
    static final long GIB = 1L << 30;
    static final ModelConfig L7 = MemoryPlan.llama("7b"), L65 = MemoryPlan.llama("65b");

    static OffloadChoice.Decision cuda(String setting, ModelConfig c, long device, long host) {
        return OffloadChoice.decide(setting, false, false, "cuda:0", c, 2048, false, 16, device, host);
    }

    @Test
    void autoKeepsEverythingOnTheDeviceWhenItFitsAndOffloadsWhenOnlyThatFits() {
        OffloadChoice.Decision h200 = cuda("auto", L7, 140 * GIB, 500 * GIB);
        assertFalse(h200.offload(), h200.report());
        assertTrue(h200.report().contains("Chosen: full (it fits"), h200.report());
        OffloadChoice.Decision a100 = cuda("auto", L7, 79 * GIB, 500 * GIB);
        assertTrue(a100.offload(), a100.report());
        assertTrue(a100.report().contains("Chosen: offload (full fine-tuning does not fit"), a100.report());
        // the report lists every mode with its device and host bytes
        for (String m : new String[] {" full ", " offload ", " lora ", " qlora ", "+ host "}) assertTrue(a100.report().contains(m), m + ": " + a100.report());
    }

    @Test
    void nothingThatFitsIsRefusedWithTheFiguresBeforeTraining() {
        LimaException big = assertThrows(LimaException.class, () -> cuda("auto", L65, 79 * GIB, 2000 * GIB));
        assertEquals(LimaStatus.OUT_OF_MEMORY, big.status());
        assertTrue(big.getMessage().contains("Neither full fine-tuning nor offload fits") && big.getMessage().contains("GiB"), big.getMessage());
        // 7B offload needs ~108 GiB of host memory: a host with 64 GiB available cannot take it
        LimaException host = assertThrows(LimaException.class, () -> cuda("auto", L7, 79 * GIB, 64 * GIB));
        assertTrue(host.getMessage().contains("host 64.0 GiB available"), host.getMessage());
        LimaException on = assertThrows(LimaException.class, () -> cuda("on", L7, 10 * GIB, 500 * GIB));
        assertTrue(on.getMessage().contains("training.offload is on but offload does not fit"), on.getMessage());
    }

    @Test
    void explicitSettingsWinAndOffloadIsForOneProcessFullFineTuning() {
        assertTrue(cuda("on", L7, 140 * GIB, 500 * GIB).offload());
        assertFalse(cuda("off", L7, 79 * GIB, 500 * GIB).offload());  // the native plan refuses it with its own figures
        assertFalse(OffloadChoice.decide("auto", true, false, "cpu", L7, 2048, false, 16, 0, 0).offload());  // an adapter run
        assertNull(OffloadChoice.decide("auto", false, false, "cpu", L7, 2048, false, 16, 0, 0).report());
        assertTrue(OffloadChoice.decide("on", false, false, "cpu", L7, 2048, false, 16, 0, 0).offload());  // the split, run on the CPU
        LimaException dp = assertThrows(LimaException.class,
                () -> OffloadChoice.decide("on", false, true, "cpu", L7, 2048, false, 16, 0, 0));
        assertEquals(LimaStatus.INVALID_ARGUMENT, dp.status());
        assertTrue(dp.getMessage().contains("distributed.zero_stage"), dp.getMessage());
        assertFalse(OffloadChoice.decide("auto", false, true, "cuda", L7, 2048, false, 16, 0, 0).offload());
    }
}
