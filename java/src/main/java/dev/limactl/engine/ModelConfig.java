package dev.limactl.engine;

/**
 * The Hugging Face LlamaConfig fields liblima uses (see lima.h's lima_model_config).
 * headDim 0 means hiddenSize / numHeads.
 */
public record ModelConfig(int vocabSize, int hiddenSize, int intermediateSize, int numLayers, int numHeads,
                          int numKvHeads, int headDim, int maxPositionEmbeddings, float rmsNormEps, float ropeTheta,
                          boolean tieWordEmbeddings, int bosTokenId, int eosTokenId, int padTokenId,
                          float initializerRange) {

    /** A LLaMA-shaped config with LLaMA's defaults for everything but the sizes. */
    public static ModelConfig llama(int vocab, int hidden, int ffn, int layers, int heads, int kvHeads, int maxPositions) {
        return new ModelConfig(vocab, hidden, ffn, layers, heads, kvHeads, 0, maxPositions, 1e-6f, 10000f, false, 1, 2, -1,
                0.02f);
    }

    public ModelConfig withVocabSize(int v) {
        return new ModelConfig(v, hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim,
                maxPositionEmbeddings, rmsNormEps, ropeTheta, tieWordEmbeddings, bosTokenId, eosTokenId, padTokenId,
                initializerRange);
    }
}
