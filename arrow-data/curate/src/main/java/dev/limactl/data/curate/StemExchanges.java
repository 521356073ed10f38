package dev.limactl.data.curate;

import java.util.List;

/**
 * The default STEM group of StackExchange sites (short names, as in "math" for math.stackexchange.com);
 * every other exchange is "other". The paper reports 75 STEM and 99 other exchanges without listing
 * them; this is our reconstruction from the sites' own topics. Override with stem_exchanges in a recipe.
 */
public final class StemExchanges {
    public static final List<String> PAPER = List.of("math", "mathoverflow", "stats", "physics", "chemistry", "biology",
            "cs", "cstheory", "datascience", "ai", "astronomy", "earthscience", "engineering", "electronics", "robotics",
            "quant", "economics", "matheducators", "hsm", "bioinformatics", "mathematica", "matlab", "scicomp", "softwareengineering",
            "stackoverflow", "serverfault", "superuser", "askubuntu", "unix", "dba", "security", "crypto", "networkengineering",
            "codereview", "programmers", "gamedev", "dsp", "gis", "quantumcomputing", "computergraphics", "cseducators",
            "reverseengineering", "raspberrypi", "arduino", "tex", "webmasters", "webapps", "wordpress", "drupal", "magento",
            "salesforce", "sharepoint", "sqa", "devops", "emacs", "vi", "android", "apple", "blender", "opendata", "or",
            "psychology", "cogsci", "medicalsciences", "space", "aviation", "mechanics", "diy", "ham", "3dprinting",
            "iot", "materials", "proofassistants", "retrocomputing", "sustainability", "ethereum", "bitcoin");

    private StemExchanges() {}
}
