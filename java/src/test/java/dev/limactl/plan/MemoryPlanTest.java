package dev.limactl.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.limactl.engine.ModelConfig;
import java.util.List;
import org.junit.jupiter.api.Test;

class MemoryPlanTest {
    @Test
    void parameterCountsAreLlamasPublishedOnes() {
        ModelConfig c7 = MemoryPlan.llama("7b"), c13 = MemoryPlan.llama("13b");
        // LLaMA-7B and 13B have 6,738,415,616 and 13,015,864,320 parameters with 32,000 pieces; +1 EOT row in each of two matrices
        assertEquals(6_738_415_616L + 2 * 4096, MemoryPlan.parameters(c7));
        assertEquals(13_015_864_320L + 2 * 5120, MemoryPlan.parameters(c13));
        assertThrows(IllegalArgumentException.class, () -> MemoryPlan.llama("8x7b"));
    }

    @Test
    void shardingDividesWhatEachStageShardsAndTheChoiceIsTheLowestStageThatFits() {
        ModelConfig c = MemoryPlan.llama("65b");
        long p = MemoryPlan.parameters(c);
        List<MemoryPlan.Stage> s = MemoryPlan.stages(c, 64, 4096, true);
        assertEquals(18 * p + s.get(0).activations() + s.get(0).communication(), s.get(0).total());
        assertEquals((12 * p + 63) / 64, s.get(1).optimizer());
        assertEquals(p * 4, s.get(1).gradients());
        assertEquals((4 * p + 63) / 64, s.get(2).gradients());
        assertEquals((2 * p + 63) / 64 + MemoryPlan.fp32Replicated(c), s.get(3).weights());
        assertEquals(p * 2 + MemoryPlan.fp32Replicated(c), s.get(1).weights());  // the fp32 master is sharded, not the gains
        assertEquals((32000L + 1) * 8192 * 4 + (2 * 80 + 1) * 8192 * 4, MemoryPlan.fp32Replicated(c));
        for (int i = 1; i < 4; i++) assertTrue(s.get(i).total() < s.get(i - 1).total(), "stage " + i);
        assertEquals(3, MemoryPlan.choose(s, 80L << 30));    // 65B on 64 x 80 GB: only ZeRO-3 fits
        assertEquals(-1, MemoryPlan.choose(MemoryPlan.stages(c, 1, 4096, true), 80L << 30));
        assertEquals(0, MemoryPlan.choose(MemoryPlan.stages(MemoryPlan.llama("7b"), 8, 4096, true), 1L << 40));
        // recomputation keeps far fewer activations
        assertTrue(MemoryPlan.activations(c, 8192, true) * 5 < MemoryPlan.activations(c, 8192, false));
    }

    @Test
    void singleGpuModesCountWhatTheEngineTrainsAndOrderTheirMemory() {
        ModelConfig c7 = MemoryPlan.llama("7b");
        // PEFT's count for LLaMA-7B, r = 16 on all seven projections: 39,976,960; + the EOT embedding and LM-head rows
        assertEquals(39_976_960L + 2 * 4096, MemoryPlan.adapterParameters(c7, 16));
        // and what liblima's adapter actually holds, on a small GQA model
        ModelConfig small = new ModelConfig(1025, 64, 176, 3, 8, 2, 0, 128, 1e-5f, 10000f, false, 1, 2, -1, 0.02f);
        try (dev.limactl.engine.Model m = dev.limactl.engine.Model.random(small, 1)) {
            m.addAdapter(new dev.limactl.engine.Model.AdapterSpec(4, 8f, 0f, java.util.EnumSet.allOf(dev.limactl.engine.Model.LoraTarget.class),
                    new int[] {1024}, false), 1);
            assertEquals(MemoryPlan.adapterParameters(small, 4), m.adapterParams());
            assertEquals(MemoryPlan.parameters(small), m.numParams());
        }
        List<MemoryPlan.Single> s = MemoryPlan.singleGpu(c7, 2048, true, 16);
        long p = MemoryPlan.parameters(c7);
        assertEquals(List.of(MemoryPlan.Mode.FULL, MemoryPlan.Mode.OFFLOAD, MemoryPlan.Mode.LORA, MemoryPlan.Mode.QLORA),
                s.stream().map(MemoryPlan.Single::mode).toList());
        long emb = 32001L * 4096, layer = (p - 2 * emb - 4096) / 32;
        assertEquals(16 * p + 4 * Math.max(emb, layer), s.get(1).host());  // master, gradient, moments + the bf16 upload ring
        assertTrue(s.get(1).device() < 24L << 30, "7B offload keeps bf16 weights and a few units' gradients on the device");
        for (int i = 1; i < 4; i++) assertTrue(s.get(i).device() < s.get(i - 1).device(), s.get(i).mode() + " needs less than " + s.get(i - 1).mode());
        assertTrue(s.get(0).device() > 80L << 30, "7B full fine-tuning does not fit an 80 GB GPU");
        assertTrue(s.get(3).device() < 24L << 30, "7B QLoRA fits a 24 GB GPU");
        assertTrue(s.get(3).device() - s.get(2).device() < -(p * 1.4), "NF4 saves ~1.5 bytes of each linear weight's 2");
    }
}
