package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** A LLaMA model held by liblima (fp32 on the CPU backend). Close it to free the native memory. */
public final class Model implements AutoCloseable {
    private LimaNative.lima_model handle;

    private Model(LimaNative.lima_model handle) {
        this.handle = handle;
    }

    /** Loads a Hugging Face checkpoint directory (config.json + model.safetensors or shards). */
    public static Model load(Path dir) {
        return load(dir, "cpu");
    }

    /** Loads onto a device: "cpu", "cuda" or "cuda:N" (the CUDA backend plugin; a clear error names what is missing). */
    public static Model load(Path dir, String device) {
        Lima.abiVersion();
        CudaPlugins.prepare(device);
        LimaNative.lima_model h = new LimaNative.lima_model();
        Native.check(LimaNative.lima_model_load(dir.toString(), device, h));
        return new Model(h);
    }

    /** A randomly initialised model (matrices ~ N(0, initializerRange), norm gains 1). */
    public static Model random(ModelConfig c, long seed) {
        return random(c, seed, "cpu");
    }

    /** A randomly initialised model on a device ("cpu", "cuda", "cuda:N"). */
    public static Model random(ModelConfig c, long seed, String device) {
        Lima.abiVersion();
        CudaPlugins.prepare(device);
        return create(c, (n, h) -> LimaNative.lima_model_create(n, device, seed, h));
    }

    /**
     * A hollow model: the shape of {@code c} without weights, for a ZeRO-3 rank other than 0, which
     * receives its shards from rank 0 when its trainer joins the ranks (lima_model_create_hollow).
     */
    public static Model hollow(ModelConfig c) {
        Lima.abiVersion();
        return create(c, LimaNative::lima_model_create_hollow);
    }

    /** The hollow model of a checkpoint directory's config.json (its weights are not read). */
    public static Model loadHollow(Path dir) {
        Lima.abiVersion();
        LimaNative.lima_model h = new LimaNative.lima_model();
        Native.check(LimaNative.lima_model_load_hollow(dir.toString(), h));
        return new Model(h);
    }

    /**
     * Puts a hollow model on a CUDA device ("cuda" or "cuda:N"), still without weights: a ZeRO-3 trainer
     * over NCCL fills this rank's pieces there (lima_model_to_device). Call it after the model's final
     * shape is set (resizeVocab).
     */
    public void toDevice(String device) {
        Native.check(LimaNative.lima_model_to_device(live(), device));
    }

    private static Model create(ModelConfig c, java.util.function.ToIntBiFunction<LimaNative.lima_model_config, LimaNative.lima_model> make) {
        LimaNative.lima_model_config n = new LimaNative.lima_model_config();
        try {
            LimaNative.lima_model_config_init(n);
            n.vocab_size(c.vocabSize()).hidden_size(c.hiddenSize()).intermediate_size(c.intermediateSize())
                    .num_layers(c.numLayers()).num_heads(c.numHeads()).num_kv_heads(c.numKvHeads()).head_dim(c.headDim())
                    .max_position_embeddings(c.maxPositionEmbeddings()).rms_norm_eps(c.rmsNormEps())
                    .rope_theta(c.ropeTheta()).tie_word_embeddings(c.tieWordEmbeddings() ? 1 : 0)
                    .bos_token_id(c.bosTokenId()).eos_token_id(c.eosTokenId()).pad_token_id(c.padTokenId())
                    .initializer_range(c.initializerRange());
            LimaNative.lima_model h = new LimaNative.lima_model();
            Native.check(make.applyAsInt(n, h));
            return new Model(h);
        } finally {
            LimaNative.release(n);
        }
    }

    /** Saves in the Hugging Face layout; maxShardBytes 0 = one file. Never damages an earlier save on failure. */
    public void save(Path dir, Dtype dtype, long maxShardBytes) {
        Native.check(LimaNative.lima_model_save(live(), dir.toString(), dtype.code, maxShardBytes));
    }

    public void save(Path dir, Dtype dtype) {
        save(dir, dtype, 0);
    }

    public ModelConfig config() {
        LimaNative.lima_model_config n = new LimaNative.lima_model_config();
        try {
            Native.check(LimaNative.lima_model_get_config(live(), n));
            return new ModelConfig(n.vocab_size(), n.hidden_size(), n.intermediate_size(), n.num_layers(), n.num_heads(),
                    n.num_kv_heads(), n.head_dim(), n.max_position_embeddings(), n.rms_norm_eps(), n.rope_theta(),
                    n.tie_word_embeddings() != 0, n.bos_token_id(), n.eos_token_id(), n.pad_token_id(),
                    n.initializer_range());
        } finally {
            LimaNative.release(n);
        }
    }

    public long numParams() {
        long[] out = new long[1];
        Native.check(LimaNative.lima_model_num_params(live(), out));
        return out[0];
    }

    /** Grows the vocabulary (new embedding and LM-head rows = the mean of the old ones). */
    public void resizeVocab(int newVocabSize) {
        Native.check(LimaNative.lima_model_resize_vocab(live(), newVocabSize));
    }

    /** LoRA target modules, in PEFT's names; bit i of the native mask is ordinal i. */
    public enum LoraTarget {
        q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;

        public static int mask(java.util.Collection<LoraTarget> targets) {
            int m = 0;
            for (LoraTarget t : targets) m |= 1 << t.ordinal();
            return m;
        }
    }

    /** A LoRA adapter's settings: rank, alpha, dropout of its input, targets, trainable token ids. */
    public record AdapterSpec(int r, float alpha, float dropout, java.util.Set<LoraTarget> targets, int[] trainableTokens,
                              boolean rslora) {}

    /**
     * Adds a fresh LoRA adapter (B = 0: the output is unchanged). From now on a trainer of this model
     * trains only the adapter and the embedding / LM-head rows of the trainable tokens; the rest is frozen.
     */
    public void addAdapter(AdapterSpec s, long seed) {
        Native.check(LimaNative.lima_model_add_adapter(live(), s.r(), s.alpha(), s.dropout(), LoraTarget.mask(s.targets()),
                s.trainableTokens(), s.trainableTokens().length, s.rslora() ? 1 : 0, seed));
    }

    /** Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors). */
    public void loadAdapter(Path dir) {
        Native.check(LimaNative.lima_model_load_adapter(live(), dir.toString()));
    }

    /** Writes the adapter in PEFT's format; baseModel goes to base_model_name_or_path. */
    public void saveAdapter(Path dir, String baseModel) {
        Native.check(LimaNative.lima_model_save_adapter(live(), dir.toString(), baseModel));
    }

    /**
     * QLoRA's storage: the projections of every layer in 4-bit NormalFloat (double-quantised absmax when
     * doubleQuant), frozen. Before adding an adapter; the model then trains adapters only.
     */
    public void quantizeNf4(boolean doubleQuant) {
        Native.check(LimaNative.lima_model_quantize_nf4(live(), doubleQuant ? 1 : 0));
    }

    /** Host bytes the weights take (fp32 tensors + NF4 storage). */
    public long weightBytes() {
        long[] out = new long[1];
        Native.check(LimaNative.lima_model_weight_bytes(live(), out));
        return out[0];
    }

    /** Folds the adapter into the weights (W += scale * B A) and drops it. */
    public void mergeAdapter() {
        Native.check(LimaNative.lima_model_merge_adapter(live()));
    }

    /** The adapter's rank, 0 when the model has none. */
    public int adapterRank() {
        int[] r = new int[1];
        Native.check(LimaNative.lima_model_adapter_info(live(), r, null, null, null, null));
        return r[0];
    }

    /** Elements the adapter trains (0 when there is none). */
    public long adapterParams() {
        int[] r = new int[1];
        long[] n = new long[1];
        Native.check(LimaNative.lima_model_adapter_info(live(), r, null, null, null, n));
        return r[0] == 0 ? 0 : n[0];
    }

    public record TensorInfo(String name, long[] shape) {
        public long numel() {
            long n = 1;
            for (long s : shape) n *= s;
            return n;
        }
    }

    /** The parameter table in Hugging Face order. */
    public List<TensorInfo> tensors() {
        int[] n = new int[1];
        Native.check(LimaNative.lima_model_num_tensors(live(), n));
        List<TensorInfo> out = new ArrayList<>();
        byte[] name = new byte[512];
        for (int i = 0; i < n[0]; i++) {
            long[] shape = new long[2];
            int[] nd = new int[1];
            Native.check(LimaNative.lima_model_tensor_info(handle, i, name, name.length, shape, nd));
            int len = 0;
            while (name[len] != 0) len++;
            out.add(new TensorInfo(new String(name, 0, len, StandardCharsets.UTF_8),
                    nd[0] == 2 ? shape : new long[] {shape[0]}));
        }
        return out;
    }

    public float[] readTensor(String name) {
        long n = tensors().stream().filter(t -> t.name().equals(name)).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("no parameter named " + name)).numel();
        float[] out = new float[Math.toIntExact(n)];
        Native.check(LimaNative.lima_model_read_tensor(live(), name, out, n));
        return out;
    }

    /** Eval-mode per-token log-probabilities (rows * seqLen); 0 for segment starts and padding. */
    public float[] tokenLogprobs(Batch b) {
        float[] out = new float[b.rows() * b.seqLen()];
        Native.check(LimaNative.lima_model_token_logprobs(live(), b.live(), out, out.length));
        return out;
    }

    /** Eval-mode logits (rows * seqLen * vocab). */
    public float[] logits(Batch b) {
        float[] out = new float[Math.multiplyExact(b.rows() * b.seqLen(), config().vocabSize())];
        Native.check(LimaNative.lima_model_logits(live(), b.live(), out, out.length));
        return out;
    }

    LimaNative.lima_model live() {
        if (handle == null) throw new IllegalStateException("model is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            LimaNative.lima_model_free(handle);
            handle = null;
        }
    }
}
