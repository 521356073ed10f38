package dev.limactl.config;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * Builds a {@link LimaConfig} in layers: the defaults (the paper's numbers), a preset, a user file
 * (YAML or JSON), then {@code key=value} overrides. Every layer may only set keys the defaults
 * know, so a misspelt key is an error naming it; the result is validated.
 */
public final class ConfigLoader {
    public static final List<String> PRESETS = List.of("lima-65b", "lima-7b", "demo");
    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory())
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
            .disable(DeserializationFeature.ACCEPT_FLOAT_AS_INT);  // training.batch_size=1.5 is an error, not 1

    private final ObjectNode tree;

    private ConfigLoader(ObjectNode tree) {
        this.tree = tree;
    }

    /** Starts from the defaults plus a preset (null = defaults only). */
    public static ConfigLoader preset(String name) {
        ConfigLoader l = new ConfigLoader((ObjectNode) resource("defaults"));
        if (name != null) {
            if (!PRESETS.contains(name)) {
                throw new ConfigException("unknown preset \"" + name + "\" (known: " + String.join(", ", PRESETS) + ")");
            }
            l.merge(resource(name), "preset " + name, "");
        }
        return l;
    }

    /** Layers a YAML or JSON file over the current values. */
    public ConfigLoader file(Path path) {
        JsonNode n;
        try {
            n = YAML.readTree(dev.limactl.data.Utf8Text.read(path));
        } catch (NoSuchFileException e) {
            throw new ConfigException("config file " + path + " does not exist");
        } catch (JsonProcessingException e) {
            throw new ConfigException(path + ": not valid YAML/JSON: " + e.getOriginalMessage()
                    + (e.getLocation() != null ? " (line " + e.getLocation().getLineNr() + ")" : ""), e);
        } catch (IOException e) {
            throw new ConfigException("cannot read config file " + path + ": " + dev.limactl.data.IoErrors.why(e), e);
        }
        if (n == null || n.isMissingNode() || n.isNull()) return this;
        if (!n.isObject()) throw new ConfigException(path + ": expected a mapping of sections at the top level");
        merge(n, path.toString(), "");
        return this;
    }

    /** Applies "section.key=value" overrides (the CLI's --set); values are parsed as YAML scalars. */
    public ConfigLoader set(List<String> assignments) {
        for (String a : assignments) {
            int eq = a.indexOf('=');
            if (eq <= 0) throw new ConfigException("--set " + a + ": expected section.key=value");
            String[] path = a.substring(0, eq).trim().split("\\.");
            JsonNode value;
            try {
                value = YAML.readTree(a.substring(eq + 1));
            } catch (JsonProcessingException e) {
                value = TextNode.valueOf(a.substring(eq + 1));
            }
            if (value == null || value.isMissingNode()) value = TextNode.valueOf("");
            ObjectNode patch = YAML.createObjectNode();
            ObjectNode cur = patch;
            for (int i = 0; i < path.length - 1; i++) cur = cur.putObject(path[i]);
            cur.set(path[path.length - 1], value);
            merge(patch, "--set " + a, "");
        }
        return this;
    }

    /** Hugging Face Trainer names accepted for limactl's keys (full dotted name -> our key in that section). */
    static final Map<String, String> ALIASES = Map.of(
            "training.num_train_epochs", "epochs",
            "optimizer.learning_rate", "lr",
            "optimizer.max_grad_norm", "grad_clip",
            "optimizer.lr_scheduler_type", "schedule",
            "optimizer.adam_beta1", "beta1",
            "optimizer.adam_beta2", "beta2",
            "optimizer.adam_epsilon", "eps");

    private void merge(JsonNode patch, String where, String prefix) {
        merge(tree, patch, where, prefix);
    }

    private static void merge(ObjectNode base, JsonNode patch, String where, String prefix) {
        Iterator<Map.Entry<String, JsonNode>> it = patch.fields();
        while (it.hasNext()) {
            Map.Entry<String, JsonNode> e = it.next();
            String key = prefix + e.getKey();
            String name = ALIASES.getOrDefault(key, e.getKey());  // a familiar name (Hugging Face's) for one of ours
            key = prefix + name;
            JsonNode cur = base.get(name);
            if (cur == null) {
                List<String> known = new ArrayList<>();
                base.fieldNames().forEachRemaining(known::add);
                throw new ConfigException(where + ": unknown key \"" + key + "\" (known here: " + String.join(", ", known) + ")");
            }
            if (cur.isObject()) {
                if (!e.getValue().isObject()) throw new ConfigException(where + ": \"" + key + "\" must be a mapping");
                merge((ObjectNode) cur, e.getValue(), where, key + ".");
            } else {
                if (e.getValue().isContainerNode()) throw new ConfigException(where + ": \"" + key + "\" must be a single value");
                base.set(name, e.getValue());
            }
        }
    }

    /** The merged tree (for writing the resolved config of a run). */
    public String toYaml() {
        try {
            return YAML.writeValueAsString(tree);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    public LimaConfig load() {
        LimaConfig c;
        try {
            c = YAML.treeToValue(tree, LimaConfig.class);
        } catch (JsonProcessingException e) {
            String path = e instanceof com.fasterxml.jackson.databind.JsonMappingException m
                    ? m.getPath().stream().map(r -> r.getFieldName()).reduce((a, b) -> a + "." + b).orElse("?") : "?";
            throw new ConfigException("config key \"" + path + "\": " + e.getOriginalMessage(), e);
        }
        ConfigValidator.validate(c);
        return c;
    }

    private static JsonNode resource(String name) {
        try (InputStream in = ConfigLoader.class.getResourceAsStream("presets/" + name + ".yaml")) {
            if (in == null) throw new IllegalStateException("missing preset resource " + name);
            return YAML.readTree(in);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read preset " + name, e);
        }
    }
}
