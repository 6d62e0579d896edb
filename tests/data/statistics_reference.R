# Reference values for tests/test_statistics_reference.py, computed with R's stats package.
#
# Run from the repository root:  Rscript tests/data/statistics_reference.R
# It writes tests/data/statistics_reference.json: every case's data, the options the
# service is asked for, and the values R gives. The tests read that file and never need R.
# Base R only (no packages), so any R >= 4.0 reproduces it; the R version is recorded.
#
# Where base R has no function for a number the service reports (effect sizes, the
# rank-biserial interval, Brown-Forsythe's Levene test), it is written out here from its
# textbook formula. Permutation p-values are enumerated by brute force.

options(digits = 17)

# -- a JSON writer (base R has none) -------------------------------------------------------------

json_array <- function(x) structure(list(x), class = "json_array")

to_json <- function(x, indent = "") {
  inner <- paste0(indent, "  ")
  if (inherits(x, "json_array")) {
    values <- x[[1]]
    if (length(values) == 0) return("[]")
    items <- vapply(seq_along(values), function(i) to_json(values[i], inner), "")
    return(paste0("[", paste(items, collapse = ", "), "]"))
  }
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    if (!is.null(names(x))) {
      items <- vapply(names(x), function(k) paste0(inner, '"', k, '": ', to_json(x[[k]], inner)), "")
      return(paste0("{\n", paste(items, collapse = ",\n"), "\n", indent, "}"))
    }
    items <- vapply(x, function(v) paste0(inner, to_json(v, inner)), "")
    return(paste0("[\n", paste(items, collapse = ",\n"), "\n", indent, "]"))
  }
  stopifnot(length(x) == 1)
  if (is.na(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.character(x)) return(paste0('"', gsub('"', '\\\\"', x), '"'))
  if (is.infinite(x)) return("null")  # an open end of a one-sided interval: null in the API too
  sprintf("%.17g", x)
}

# -- data ------------------------------------------------------------------------------------------

# The data sets of tests/test_statistics.py.
A <- c(0.89, 0.91, 0.85, 0.88, 0.93, 0.87, 0.90, 0.86, 0.92, 0.89)
B <- c(0.82, 0.85, 0.79, 0.84, 0.81, 0.86, 0.80, 0.83, 0.78, 0.85)
C <- c(0.84, 0.88, 0.83, 0.86, 0.85, 0.82, 0.87, 0.84, 0.86, 0.85)
P <- c(0.88, 0.90, 0.86, 0.85, 0.91, 0.88, 0.87, 0.84, 0.90, 0.86)

# Without ties, 20 and 25 values: R's exact distribution of W, scipy's default is asymptotic.
set.seed(20240115)
U20 <- round(rnorm(20, 0.50, 0.10), 6)
U25 <- round(rnorm(25, 0.45, 0.10), 6)
stopifnot(!anyDuplicated(c(U20, U25)))

# Small groups with ties: a permutation p-value enumerates all choose(13, 6) = 1716 splits.
T6 <- c(1, 2, 2, 3, 5, 6)
T7 <- c(2, 3, 4, 4, 6, 7, 8)

# Pairs whose differences (X12 - Y12) have ties and zeros; integers, so x - y is exact.
X12 <- c(5, 7, 6, 9, 4, 8, 10, 6, 7, 11, 5, 9)
Y12 <- c(5, 6, 4, 7, 5, 6, 7, 6, 3, 8, 7, 4)
# Differences without ties or zeros, n = 49 (R: exact) and n = 50 (R: normal approximation).
set.seed(7)
D50 <- round(rnorm(50, 0.3, 1), 6)
stopifnot(!anyDuplicated(abs(D50)), all(D50 != 0))
D49 <- D50[1:49]
# 40 values in steps of 0.25 with many ties, tested against mu = 0.1 (no zero differences).
set.seed(11)
W40 <- round(rnorm(40, 0.4, 1) * 4) / 4
# Differences with zeros but no ties among the rest.
Z15 <- c(0, 0.31, -0.12, 0.47, 0, 0.85, 0.66, -0.27, 1.02, 0.58, 0.19, 0, 1.24, -0.04, 0.93)

keys <- function(n) sprintf("s%02d", seq_len(n) - 1)
numeric_group <- function(name, values, labels = character(0)) {
  list(name = name, values = json_array(values), labels = json_array(labels))
}
category_group <- function(name, counts) {
  list(name = name, values = json_array(numeric(0)), labels = json_array(rep(names(counts), counts)))
}

# -- helpers: formulas the service reports beside R's tests --------------------------------------

pooled_sd <- function(x, y) {
  sqrt(((length(x) - 1) * var(x) + (length(y) - 1) * var(y)) / (length(x) + length(y) - 2))
}
hedges_j <- function(df) exp(lgamma(df / 2) - 0.5 * log(df / 2) - lgamma((df - 1) / 2))
fisher_z_interval <- function(r, se, alpha, alternative) {
  z <- atanh(r)
  if (alternative == "two.sided") {
    q <- qnorm(1 - alpha / 2)
    return(c(tanh(z - q * se), tanh(z + q * se)))
  }
  q <- qnorm(1 - alpha)
  if (alternative == "greater") c(tanh(z - q * se), 1) else c(-1, tanh(z + q * se))
}
rank_biserial_u <- function(x, y, alpha, alternative) {
  w <- unname(wilcox.test(x, y, exact = FALSE)$statistic)
  n1 <- length(x)
  n2 <- length(y)
  r <- 2 * w / (n1 * n2) - 1
  list(r = r, ci = fisher_z_interval(r, sqrt((n1 + n2 + 1) / (3 * n1 * n2)), alpha, alternative))
}
rank_biserial_signed <- function(d, alpha, alternative) {
  d <- d[d != 0]
  n <- length(d)
  ranks <- rank(abs(d))
  plus <- sum(ranks[d > 0])
  minus <- sum(ranks[d < 0])
  r <- (plus - minus) / (plus + minus)
  se <- sqrt(n * (n + 1) * (2 * n + 1) / 6) / (n * (n + 1) / 2)
  list(r = r, ci = fisher_z_interval(r, se, alpha, alternative))
}
two_sided_from_tails <- function(lower, upper) min(1, 2 * min(lower, upper))
# Brute-force permutation p-values (the rearrangements are few enough to list).
permutation_signed_rank <- function(d, alternative) {
  n <- length(d)
  d <- d[d != 0]
  ranks <- rank(abs(d))
  observed <- sum(ranks[d > 0])
  signs <- as.matrix(expand.grid(rep(list(c(FALSE, TRUE)), length(d))))
  null <- as.vector(signs %*% ranks)
  # A zero's sign flips too (scipy flips all n): it only repeats each arrangement 2^zeros times.
  tolerance <- 1e-9
  lower <- mean(null <= observed + tolerance)
  upper <- mean(null >= observed - tolerance)
  switch(alternative, two.sided = two_sided_from_tails(lower, upper), less = lower, greater = upper)
}
permutation_u <- function(x, y, alternative) {
  pooled <- c(x, y)
  ranks <- rank(pooled)
  n1 <- length(x)
  observed <- sum(ranks[seq_len(n1)]) - n1 * (n1 + 1) / 2
  splits <- combn(length(pooled), n1)
  null <- colSums(matrix(ranks[splits], nrow = n1)) - n1 * (n1 + 1) / 2
  tolerance <- 1e-9
  lower <- mean(null <= observed + tolerance)
  upper <- mean(null >= observed - tolerance)
  switch(alternative, two.sided = two_sided_from_tails(lower, upper), less = lower, greater = upper)
}
# The conditional MLE of the odds ratio and its exact interval, solved to near machine precision:
# fisher.test's uniroot runs at its default tolerance (.Machine$double.eps^0.25, ~1e-4).
conditional_odds_ratio <- function(table, conf.level, alternative) {
  m <- sum(table[, 1])
  n <- sum(table[, 2])
  k <- sum(table[1, ])
  x <- table[1, 1]
  lo <- max(0, k - n)
  hi <- min(k, m)
  support <- lo:hi
  logdc <- dhyper(support, m, n, k, log = TRUE)
  dnhyper <- function(ncp) {
    if (ncp == 0) return(as.numeric(support == lo))
    d <- logdc + log(ncp) * support
    d <- exp(d - max(d))
    d / sum(d)
  }
  mnhyper <- function(ncp) sum(support * dnhyper(ncp))
  pnhyper <- function(q, ncp, upper.tail = FALSE) {
    if (upper.tail) sum(dnhyper(ncp)[support >= q]) else sum(dnhyper(ncp)[support <= q])
  }
  # The root lies below 1 when f changes sign on (0, 1), else above: solved as 1 / t as fisher.test does.
  solve <- function(f) {
    if (f(1) == 0) return(1)
    if (sign(f(0)) != sign(f(1))) return(uniroot(f, c(0, 1), tol = 1e-15)$root)
    1 / uniroot(function(t) f(1 / t), c(.Machine$double.eps, 1), tol = 1e-15)$root
  }
  mle <- solve(function(t) mnhyper(t) - x)
  ncp_upper <- function(alpha) solve(function(t) pnhyper(x, t) - alpha)
  ncp_lower <- function(alpha) solve(function(t) pnhyper(x, t, upper.tail = TRUE) - alpha)
  ci <- switch(alternative,
    two.sided = c(ncp_lower((1 - conf.level) / 2), ncp_upper((1 - conf.level) / 2)),
    less = c(0, ncp_upper(1 - conf.level)),
    greater = c(ncp_lower(1 - conf.level), Inf)
  )
  list(estimate = mle, ci = ci)
}
cramers_v <- function(table) {
  x2 <- unname(suppressWarnings(chisq.test(table, correct = FALSE))$statistic)
  sqrt(x2 / (sum(table) * (min(dim(table)) - 1)))
}
brown_forsythe <- function(...) {
  groups <- list(...)
  z <- unlist(lapply(groups, function(g) abs(g - median(g))))
  g <- factor(rep(seq_along(groups), lengths(groups)))
  oneway.test(z ~ g, var.equal = TRUE)
}

# -- cases ------------------------------------------------------------------------------------------

CLOSED_FORM <- 1e-10
cases <- list()
add <- function(id, test_type, groups, options, expected, tolerance = CLOSED_FORM, why = "closed form") {
  if (length(options) == 0) options <- setNames(list(), character(0))
  cases[[length(cases) + 1]] <<- list(
    id = id, test_type = test_type, groups = groups, options = options,
    expected = expected, tolerance = tolerance, why = why
  )
}
alt_of <- c(two.sided = "two_sided", less = "less", greater = "greater")

# t-tests: Student, Welch, paired, one-sample, every alternative, and a 90 % interval.
for (alternative in names(alt_of)) {
  for (var_equal in c(TRUE, FALSE)) {
    result <- t.test(A, B, var.equal = var_equal, alternative = alternative)
    test_type <- if (var_equal) "two_sample_t_test" else "welch_t_test"
    add(
      paste(test_type, alternative), test_type,
      list(numeric_group("a", A), numeric_group("b", B)),
      list(alternative = alt_of[[alternative]]),
      list(
        statistic_name = "t",
        statistic = unname(result$statistic), p_value = result$p.value,
        degrees_of_freedom = unname(result$parameter),
        estimate = unname(result$estimate[1] - result$estimate[2]),
        confidence_interval = json_array(as.vector(result$conf.int)),
        effect_size = (mean(A) - mean(B)) / pooled_sd(A, B)
      )
    )
  }
  result <- t.test(A, P, paired = TRUE, alternative = alternative)
  add(
    paste("paired_t_test", alternative), "paired_t_test",
    list(numeric_group("a", A, keys(10)), numeric_group("p", P, keys(10))),
    list(alternative = alt_of[[alternative]], pair_by = "sample_id"),
    list(
      statistic = unname(result$statistic), p_value = result$p.value,
      degrees_of_freedom = unname(result$parameter), estimate = unname(result$estimate),
      confidence_interval = json_array(as.vector(result$conf.int)),
      effect_size = mean(A - P) / sd(A - P)
    )
  )
  result <- t.test(A, mu = 0.88, alternative = alternative)
  add(
    paste("one_sample_t_test", alternative), "one_sample_t_test",
    list(numeric_group("a", A)),
    list(alternative = alt_of[[alternative]], mu = 0.88),
    list(
      statistic = unname(result$statistic), p_value = result$p.value,
      degrees_of_freedom = unname(result$parameter), estimate = unname(result$estimate),
      confidence_interval = json_array(as.vector(result$conf.int)),
      effect_size = (mean(A) - 0.88) / sd(A)
    )
  )
}
result <- t.test(A, C, var.equal = FALSE, conf.level = 0.9)
add(
  "welch_t_test alpha 0.1, Glass's delta", "welch_t_test",
  list(numeric_group("a", A), numeric_group("c", C)),
  list(alpha = 0.1, effect_size = "glass_delta"),
  list(
    statistic = unname(result$statistic), p_value = result$p.value,
    degrees_of_freedom = unname(result$parameter),
    confidence_interval = json_array(as.vector(result$conf.int)),
    confidence_level = 0.9,
    effect_size = (mean(A) - mean(C)) / sd(C)
  )
)
add(
  "two_sample_t_test Hedges' g", "two_sample_t_test",
  list(numeric_group("a", A), numeric_group("c", C)),
  list(effect_size = "hedges_g"),
  list(effect_size = (mean(A) - mean(C)) / pooled_sd(A, C) * hedges_j(18))
)
add(
  "paired_t_test Hedges' g of d_z", "paired_t_test",
  list(numeric_group("a", A, keys(10)), numeric_group("p", P, keys(10))),
  list(pair_by = "sample_id", effect_size = "hedges_g"),
  list(effect_size = mean(A - P) / sd(A - P) * hedges_j(9))
)

# One-way ANOVA and Kruskal-Wallis (A, B, C have ties: H is tie-corrected).
result <- oneway.test(v ~ g, data.frame(v = c(A, B, C), g = rep(c("a", "b", "c"), each = 10)), var.equal = TRUE)
everything <- c(A, B, C)
ss_total <- sum((everything - mean(everything))^2)
ss_between <- 10 * sum((c(mean(A), mean(B), mean(C)) - mean(everything))^2)
ms_within <- (ss_total - ss_between) / 27
abc <- list(numeric_group("a", A), numeric_group("b", B), numeric_group("c", C))
add(
  "one_way_anova eta squared", "one_way_anova", abc, list(),
  list(
    statistic_name = "F", statistic = unname(result$statistic), p_value = result$p.value,
    degrees_of_freedom = json_array(unname(result$parameter)), effect_size = ss_between / ss_total
  )
)
add(
  "one_way_anova omega squared", "one_way_anova", abc, list(effect_size = "omega_squared"),
  list(effect_size = (ss_between - 2 * ms_within) / (ss_total + ms_within))
)
result <- kruskal.test(list(A, B, C))
add(
  "kruskal_wallis with ties", "kruskal_wallis", abc, list(),
  list(
    statistic_name = "H", statistic = unname(result$statistic), p_value = result$p.value,
    degrees_of_freedom = unname(result$parameter), p_value_method = "asymptotic",
    effect_size = (unname(result$statistic) - 3 + 1) / (30 - 3)
  )
)

# Chi-square: 3 x 2, and 2 x 2 with and without Yates' correction.
table3 <- rbind(c(12, 8), c(5, 15), c(9, 11))
groups3 <- list(
  category_group("a", c(x = 12, y = 8)), category_group("b", c(x = 5, y = 15)),
  category_group("c", c(x = 9, y = 11))
)
result <- chisq.test(table3)
add(
  "chi_square 3x2", "chi_square", groups3, list(category = "outcome"),
  list(
    statistic_name = "chi_square", statistic = unname(result$statistic), p_value = result$p.value,
    degrees_of_freedom = unname(result$parameter), continuity_correction = FALSE,
    effect_size = cramers_v(table3)
  )
)
table2 <- rbind(c(12, 8), c(5, 15))
groups2 <- list(category_group("a", c(x = 12, y = 8)), category_group("b", c(x = 5, y = 15)))
for (correct in c(TRUE, FALSE)) {
  result <- chisq.test(table2, correct = correct)
  add(
    paste("chi_square 2x2 correct", correct), "chi_square", groups2,
    if (correct) list(category = "outcome") else list(category = "outcome", continuity_correction = FALSE),
    list(
      statistic = unname(result$statistic), p_value = result$p.value,
      degrees_of_freedom = unname(result$parameter), continuity_correction = correct,
      effect_size = cramers_v(table2)
    )
  )
}

# Fisher's exact test: p-value and the conditional odds ratio. fisher.test's own estimate and
# interval are solved to uniroot's default tolerance; the tight values come from the same
# equations solved to 1e-15 (conditional_odds_ratio above), checked against fisher.test's.
for (alternative in names(alt_of)) {
  for (level in c(0.95, 0.9)) {
    result <- fisher.test(table2, alternative = alternative, conf.level = level)
    tight <- conditional_odds_ratio(table2, level, alternative)
    solved <- is.finite(tight$ci) & tight$ci > 0
    stopifnot(abs(tight$estimate / result$estimate - 1) < 1e-3)
    stopifnot(all(abs(tight$ci[solved] / result$conf.int[solved] - 1) < 1e-3))
    options <- list(category = "outcome", alternative = alt_of[[alternative]])
    if (level != 0.95) options$alpha <- 1 - level
    add(
      paste("fisher_exact", alternative, level), "fisher_exact", groups2, options,
      list(
        statistic_name = "sample_odds_ratio", statistic = 12 * 15 / (8 * 5), p_value = result$p.value,
        p_value_method = "exact", confidence_interval_of = "conditional_odds_ratio",
        estimate = tight$estimate, confidence_interval = json_array(tight$ci),
        effect_size = cramers_v(table2)
      ),
      1e-10, "the conditional MLE and interval are roots solved numerically (R to 1e-15 here, scipy's brentq)"
    )
    add(
      paste("fisher_exact", alternative, level, "as fisher.test reports it"), "fisher_exact", groups2, options,
      list(estimate = unname(result$estimate), confidence_interval = json_array(as.vector(result$conf.int))),
      1e-3, paste(
        "fisher.test's uniroot stops at its default tolerance, .Machine$double.eps^0.25 (1.2e-4), absolute on",
        "the odds ratio below 1 and on its reciprocal above 1"
      )
    )
  }
}

# Mann-Whitney U.
for (alternative in names(alt_of)) {
  result <- wilcox.test(U20, U25, alternative = alternative)
  rb <- rank_biserial_u(U20, U25, 0.05, alternative)
  add(
    paste("mann_whitney_u 20/25 without ties, auto: exact", alternative), "mann_whitney_u",
    list(numeric_group("x", U20), numeric_group("y", U25)),
    list(alternative = alt_of[[alternative]]),
    list(
      statistic_name = "U", statistic = unname(result$statistic), p_value = result$p.value,
      p_value_method = "exact", continuity_correction = FALSE,
      effect_size = rb$r, estimate = rb$r, confidence_interval = json_array(rb$ci)
    )
  )
}
for (correct in c(TRUE, FALSE)) {
  result <- wilcox.test(U20, U25, exact = FALSE, correct = correct)
  add(
    paste("mann_whitney_u 20/25 asymptotic, correct", correct), "mann_whitney_u",
    list(numeric_group("x", U20), numeric_group("y", U25)),
    if (correct) list(method = "asymptotic") else list(method = "asymptotic", continuity_correction = FALSE),
    list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "asymptotic",
         continuity_correction = correct)
  )
}
result <- wilcox.test(U20, U25, exact = TRUE)
add(
  "mann_whitney_u 20/25 exact", "mann_whitney_u",
  list(numeric_group("x", U20), numeric_group("y", U25)), list(method = "exact"),
  list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "exact")
)
for (alternative in names(alt_of)) {
  result <- suppressWarnings(wilcox.test(A, C, alternative = alternative))
  add(
    paste("mann_whitney_u with ties, auto: normal approximation", alternative), "mann_whitney_u",
    list(numeric_group("a", A), numeric_group("c", C)), list(alternative = alt_of[[alternative]]),
    list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "asymptotic",
         continuity_correction = TRUE)
  )
}
for (alternative in names(alt_of)) {
  add(
    paste("mann_whitney_u permutation over every split", alternative), "mann_whitney_u",
    list(numeric_group("x", T6), numeric_group("y", T7)),
    list(alternative = alt_of[[alternative]], method = "permutation", seed = 1),
    list(
      statistic = unname(suppressWarnings(wilcox.test(T6, T7))$statistic),
      p_value = permutation_u(T6, T7, alternative), p_value_method = "permutation", continuity_correction = FALSE
    ),
    1e-12, "a count of splits over choose(13, 6)"
  )
}
# Three groups, every pair, Holm and Benjamini-Hochberg.
for (adjust in c("holm", "BH")) {
  result <- suppressWarnings(pairwise.wilcox.test(c(A, B, C), rep(c("a", "b", "c"), each = 10), p.adjust.method = adjust))
  adjusted <- c(result$p.value["b", "a"], result$p.value["c", "a"], result$p.value["c", "b"])
  add(
    paste("mann_whitney_u pairwise", adjust), "mann_whitney_u", abc,
    list(correction = if (adjust == "BH") "benjamini_hochberg" else "holm"),
    list(
      pairwise.0.adjusted_p_value = adjusted[1], pairwise.1.adjusted_p_value = adjusted[2],
      pairwise.2.adjusted_p_value = adjusted[3]
    )
  )
  result <- pairwise.t.test(c(A, B, C), rep(c("a", "b", "c"), each = 10), pool.sd = FALSE, p.adjust.method = adjust)
  adjusted <- c(result$p.value["b", "a"], result$p.value["c", "a"], result$p.value["c", "b"])
  add(
    paste("welch_t_test pairwise", adjust), "welch_t_test", abc,
    list(correction = if (adjust == "BH") "benjamini_hochberg" else "holm"),
    list(
      pairwise.0.adjusted_p_value = adjusted[1], pairwise.1.adjusted_p_value = adjusted[2],
      pairwise.2.adjusted_p_value = adjusted[3], p_value = min(adjusted)
    )
  )
}

# Wilcoxon signed-rank.
D12 <- X12 - Y12
paired12 <- list(numeric_group("x", X12, keys(12)), numeric_group("y", Y12, keys(12)))
for (alternative in names(alt_of)) {
  result <- suppressWarnings(wilcox.test(X12, Y12, paired = TRUE, alternative = alternative))
  rb <- rank_biserial_signed(D12, 0.05, alternative)
  add(
    paste("wilcoxon_signed_rank n=12 ties and zeros, auto: normal approximation", alternative),
    "wilcoxon_signed_rank", paired12, list(pair_by = "sample_id", alternative = alt_of[[alternative]]),
    list(
      statistic_name = "T_plus", statistic = unname(result$statistic), p_value = result$p.value,
      p_value_method = "asymptotic", continuity_correction = TRUE,
      effect_size = rb$r, estimate = rb$r, confidence_interval = json_array(rb$ci)
    )
  )
  add(
    paste("wilcoxon_signed_rank n=12 permutation over every sign", alternative),
    "wilcoxon_signed_rank", paired12,
    list(pair_by = "sample_id", alternative = alt_of[[alternative]], method = "permutation", seed = 3),
    list(statistic = unname(result$statistic), p_value = permutation_signed_rank(D12, alternative),
         p_value_method = "permutation", continuity_correction = FALSE),
    1e-12, "a count of sign flips over 2^12"
  )
}
result <- suppressWarnings(wilcox.test(X12, Y12, paired = TRUE, correct = FALSE))
add(
  "wilcoxon_signed_rank n=12 without continuity correction", "wilcoxon_signed_rank", paired12,
  list(pair_by = "sample_id", continuity_correction = FALSE),
  list(statistic = unname(result$statistic), p_value = result$p.value, continuity_correction = FALSE)
)
for (correct in c(TRUE, FALSE)) {
  for (alternative in names(alt_of)) {
    result <- suppressWarnings(wilcox.test(W40, mu = 0.1, correct = correct, alternative = alternative))
    options <- list(mu = 0.1, alternative = alt_of[[alternative]])
    if (!correct) options$continuity_correction <- FALSE
    add(
      paste("wilcoxon_signed_rank one group n=40 with ties, correct", correct, alternative),
      "wilcoxon_signed_rank", list(numeric_group("w", W40)), options,
      list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "asymptotic",
           continuity_correction = correct)
    )
  }
}
for (alternative in names(alt_of)) {
  result <- wilcox.test(D50, mu = 0, alternative = alternative)
  add(
    paste("wilcoxon_signed_rank n=50, auto: normal approximation", alternative), "wilcoxon_signed_rank",
    list(numeric_group("d", D50)), list(mu = 0, alternative = alt_of[[alternative]]),
    list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "asymptotic",
         continuity_correction = TRUE)
  )
  result <- wilcox.test(D50, mu = 0, alternative = alternative, exact = TRUE)
  add(
    paste("wilcoxon_signed_rank n=50 exact", alternative), "wilcoxon_signed_rank",
    list(numeric_group("d", D50)), list(mu = 0, alternative = alt_of[[alternative]], method = "exact"),
    list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "exact")
  )
  result <- wilcox.test(D49, mu = 0, alternative = alternative)
  add(
    paste("wilcoxon_signed_rank n=49, auto: exact", alternative), "wilcoxon_signed_rank",
    list(numeric_group("d", D49)), list(mu = 0, alternative = alt_of[[alternative]]),
    list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "exact",
         continuity_correction = FALSE)
  )
}
# Zeros and no ties: auto is R's normal approximation; exact (zeros dropped) is psignrank's.
result <- suppressWarnings(wilcox.test(Z15, mu = 0))
add(
  "wilcoxon_signed_rank zeros, auto: normal approximation", "wilcoxon_signed_rank",
  list(numeric_group("z", Z15)), list(mu = 0),
  list(statistic = unname(result$statistic), p_value = result$p.value, p_value_method = "asymptotic")
)
nonzero <- Z15[Z15 != 0]
v <- sum(rank(abs(nonzero))[nonzero > 0])
n <- length(nonzero)
add(
  "wilcoxon_signed_rank zeros exact over the non-zero differences", "wilcoxon_signed_rank",
  list(numeric_group("z", Z15)), list(mu = 0, method = "exact"),
  list(
    statistic = v, p_value = two_sided_from_tails(psignrank(v, n), psignrank(v - 1, n, lower.tail = FALSE)),
    p_value_method = "exact"
  )
)

# Assumption checks: Shapiro-Wilk (both R and scipy run Royston's AS R94) and Brown-Forsythe.
levene <- brown_forsythe(A, B)
add(
  "assumptions of a two-sample t-test", "two_sample_t_test",
  list(numeric_group("a", A), numeric_group("b", B)), list(),
  list(
    assumptions.normality.0.statistic = unname(shapiro.test(A)$statistic),
    assumptions.normality.0.p_value = shapiro.test(A)$p.value,
    assumptions.normality.1.statistic = unname(shapiro.test(B)$statistic),
    assumptions.normality.1.p_value = shapiro.test(B)$p.value,
    assumptions.equal_variance.statistic = unname(levene$statistic),
    assumptions.equal_variance.p_value = levene$p.value
  ),
  1e-7, paste(
    "Shapiro-Wilk's W and p come from polynomial approximations; R's swilk.c and scipy's Fortran",
    "differ from the ninth digit (2e-9 seen)"
  )
)

# Bootstrap: R has no resampler that draws numpy's numbers; only the observed difference is R's.
add(
  "bootstrap observed difference", "bootstrap",
  list(numeric_group("a", A), numeric_group("b", B)), list(resamples = 200, seed = 1),
  list(
    statistic_name = "mean_difference", statistic = mean(A) - mean(B), estimate = mean(A) - mean(B),
    effect_size = (mean(A) - mean(B)) / pooled_sd(A, B)
  )
)
add(
  "bootstrap observed median difference", "bootstrap",
  list(numeric_group("a", A), numeric_group("c", C)),
  list(resamples = 200, seed = 1, statistic = "median", bootstrap_method = "percentile"),
  list(
    statistic_name = "median_difference", statistic = median(A) - median(C),
    effect_size = rank_biserial_u(A, C, 0.05, "two.sided")$r
  )
)

reference <- list(
  generated_by = "tests/data/statistics_reference.R",
  r_version = R.version.string,
  p_adjust = list(
    p = json_array(c(0.01, 0.04, 0.03, 0.005, 0.2)),
    holm = json_array(p.adjust(c(0.01, 0.04, 0.03, 0.005, 0.2), "holm")),
    benjamini_hochberg = json_array(p.adjust(c(0.01, 0.04, 0.03, 0.005, 0.2), "BH"))
  ),
  cases = cases
)
writeLines(to_json(reference), "tests/data/statistics_reference.json")
