# workload.pl — a Perl run for tests/realprog: hashes, regexes, sort, sprintf,
# string growth. Deterministic output.
use strict; use warnings;
my %h; my @words;
for my $i (0 .. 199999) {
  my $k = sprintf("key%06d-%s", $i, ("ab" x ($i % 17)));
  $h{$k} = $i * 3;
  push @words, $k if $i % 7 == 0;
}
my ($sum, $matched) = (0, 0);
for my $k (keys %h) {
  if ($k =~ /^key(\d+)-((?:ab){5,})$/) { $matched++; $sum += $1 % 1000; }
}
delete $h{$_} for grep { /7-/ } keys %h;
my @sorted = sort { length($b) <=> length($a) || $a cmp $b } @words;
my $s = ''; $s .= "$_," for @sorted[0 .. 999];
(my $t = $s) =~ s/(ab)+/<$1>/g;
my %count; $count{substr($_, 3, 2)}++ for keys %h;
print scalar(keys %h), " $matched $sum ", length($s), " ", length($t), " ",
  join(",", map { "$_=$count{$_}" } sort keys %count), "\n";
